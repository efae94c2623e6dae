"""The manifest next to hub.py: which files a run patched and which folders it copied.

Backups alone cannot tell ``--revert`` which copied folders are ours, so the manifest records
each copy's file hashes; a folder is only removed while it still matches them.
"""

from __future__ import annotations

import json

from .files import read_if_file
from .plan import Plan
from .tree import Tree

MANIFEST_NAME = ".recycle-distill-manifest.json"


def read_manifest(tree: Tree, plan: Plan) -> dict:
    """The manifest of a previous run (empty if none or unreadable)."""
    path = tree.package / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        plan.warn(path, "unreadable manifest; ignored")
        return {}
    return data if isinstance(data, dict) else {}


def plan_manifest(tree: Tree, plan: Plan, patched: set[str], copied: dict) -> None:
    """Plan writing the manifest, or removing it when nothing is left to revert."""
    path = tree.package / MANIFEST_NAME
    old = read_if_file(path)
    if not patched and not copied:
        if old is not None:
            plan.removals.append(path)
        return
    manifest = {"tool": "recycle-distill patch_hub.py", "format": 1,
                "patched": sorted(patched), "copied": dict(sorted(copied.items()))}
    new = (json.dumps(manifest, indent=2) + "\n").encode()
    if new != old:
        plan.write(path, old, new, show_diff=False)
