"""``--copy``: copying ``upstreams/<family>`` into ``s3prl/upstream/<family>`` and removing it.

For S3PRL setups that cannot install recycle_distill, the families are imported from inside
S3PRL the way its own upstreams are.  Each copy's hashes go into the manifest, so a later run
can tell its own (possibly stale) copy from a folder someone else put there.
"""

from __future__ import annotations

from pathlib import Path

from .errors import RefusedError
from .files import tree_hashes
from .plan import Plan
from .registration import FAMILIES
from .tree import Tree


def plan_copies(tree: Tree, plan: Plan, manifest: dict, source: Path) -> dict:
    """Plan copying ``source``/<family> into s3prl/upstream/; returns the copied-folder record.

    ``source`` is the repository's ``upstreams/`` folder.
    """
    copied = dict(manifest.get("copied") or {})
    upstream = tree.package / "upstream"
    if not upstream.is_dir():
        raise RefusedError(f"--copy needs {tree.label(upstream)}/, which is missing")
    for family in FAMILIES:
        src = source / family
        if not (src / "hubconf.py").is_file():
            raise RefusedError(f"--copy needs {src}/hubconf.py, which is missing")
    for family in FAMILIES:
        src, dst = source / family, upstream / family
        key = dst.relative_to(tree.package).as_posix()
        wanted = tree_hashes(src)
        if dst.exists():
            current = tree_hashes(dst) if dst.is_dir() else None
            if current == wanted:
                plan.note("unchanged", dst, "already copied")
                continue
            if current is None or copied.get(key) != current:
                plan.warn(dst, "exists and differs from upstreams/" + family + "; left alone")
                continue
        plan.copies.append((src, dst))
        plan.note("copy", dst, f"from {src}")
        copied[key] = wanted
        plan.changed += 1
    return copied


def plan_revert_copies(tree: Tree, plan: Plan, manifest: dict) -> dict:
    """Plan removing the folders a ``--copy`` run made; returns the record of those kept."""
    left = {}
    for key, hashes in sorted((manifest.get("copied") or {}).items()):
        dst = tree.package / key
        if not dst.exists():
            continue
        if dst.is_dir() and tree_hashes(dst) == hashes:
            plan.tree_removals.append(dst)
            plan.note("remove", dst, "copied upstream")
            plan.changed += 1
        else:
            plan.warn(dst, "changed since patch_hub.py --copy copied it; left alone")
            left[key] = hashes
    return left
