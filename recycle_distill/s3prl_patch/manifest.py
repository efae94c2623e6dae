"""The manifest next to hub.py: which files a run patched and which folders it copied or created.

Backups alone cannot tell ``--revert`` which copied folders are ours, so the manifest records
each folder's file hashes; a folder is only removed while it still matches them.

The manifest is a file in someone else's tree and is never trusted: only the entries this tool
writes itself are accepted (``upstream/<family>`` copies, the ``downstream/cif_asr`` shim, and
the patched ``hub.py`` and task configs), each a plain relative name that stays inside the tree
and is not a symlink, with a non-empty hash record.  Anything else is reported and ignored, so
a hand-edited or hostile manifest cannot make ``--revert`` touch paths outside the tree or
remove a folder it did not create.
"""

from __future__ import annotations

import json
import os

from ..messages import short_repr
from .files import read_if_file
from .plan import Plan
from .registration import FAMILIES
from .shim import SHIM_KEY
from .tasks import TASKS
from .tree import Tree

MANIFEST_NAME = ".recycle-distill-manifest.json"
COPY_KEYS = frozenset(f"upstream/{family}" for family in FAMILIES)
CREATED_KEYS = frozenset({SHIM_KEY})
PATCHED_KEYS = frozenset({"hub.py", *(f"downstream/{task.config}" for task in TASKS)})


def read_manifest(tree: Tree, plan: Plan) -> dict:
    """The validated manifest of a previous run (empty if none or unreadable)."""
    path = tree.package / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        plan.warn(path, "unreadable manifest; ignored")
        return {}
    if not isinstance(data, dict):
        plan.warn(path, "manifest is not a JSON object; ignored")
        return {}
    patched = data.get("patched") or []
    return {
        "patched": [entry for entry in (patched if isinstance(patched, list) else [])
                    if _accepted(tree, plan, path, entry, PATCHED_KEYS, folder=False)],
        "copied": _folders(tree, plan, path, data.get("copied"), COPY_KEYS),
        "created": _folders(tree, plan, path, data.get("created"), CREATED_KEYS),
    }


def _folders(tree: Tree, plan: Plan, path, record, allowed: frozenset) -> dict:
    """The folder entries of a manifest section that name our own folders with real hashes."""
    if not isinstance(record, dict):
        return {}
    out = {}
    for key, hashes in record.items():
        if not _accepted(tree, plan, path, key, allowed, folder=True):
            continue
        if not (isinstance(hashes, dict) and hashes
                and all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items())):
            plan.warn(path, f"entry {short_repr(key)} has no file hashes; ignored (its folder is left alone)")
            continue
        out[key] = hashes
    return out


def _accepted(tree: Tree, plan: Plan, path, key, allowed: frozenset, folder: bool) -> bool:
    """True if ``key`` is one of the names this tool writes and stays inside the tree."""
    if not isinstance(key, str) or key not in allowed:
        plan.warn(path, f"names {short_repr(key)}, which patch_hub.py never writes; ignored")
        return False
    target = tree.package / key
    root, parent = os.path.realpath(tree.package), os.path.realpath(target.parent)
    inside = parent == root or parent.startswith(root + os.sep)
    if not inside or (folder and target.is_symlink()):
        plan.warn(path, f"entry {short_repr(key)} leads outside the S3PRL tree; ignored")
        return False
    return True


def plan_manifest(tree: Tree, plan: Plan, patched: set[str], copied: dict, created: dict | None = None) -> None:
    """Plan writing the manifest, or removing it when nothing is left to revert."""
    path = tree.package / MANIFEST_NAME
    old = read_if_file(path)
    created = created or {}
    if not patched and not copied and not created:
        if old is not None:
            plan.removals.append(path)
        return
    manifest = {"tool": "recycle-distill patch_hub.py", "format": 1,
                "patched": sorted(patched), "copied": dict(sorted(copied.items()))}
    if created:
        manifest["created"] = dict(sorted(created.items()))
    new = (json.dumps(manifest, indent=2) + "\n").encode()
    if new != old:
        plan.write(path, old, new, show_diff=False)
