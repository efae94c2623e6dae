"""The ``cif_asr`` downstream in an S3PRL git checkout: a two-file shim package.

S3PRL's runner imports ``s3prl.downstream.<-d name>.expert``, so registering our CIF-HieraDist
downstream means a folder ``s3prl/downstream/cif_asr/`` whose ``expert.py`` re-exports our
``DownstreamExpert``.  patch_hub creates the folder, records the hashes of what it wrote in the
manifest, and ``--revert`` removes the folder only while it still holds exactly that.  An
installed s3prl gets no shim: ``recycle-distill superb -d cif_asr`` registers it at run time.
"""

from __future__ import annotations

from .files import tree_hashes
from .plan import Plan
from .tree import Tree

SHIM_KEY = "downstream/cif_asr"  # relative to the folder holding hub.py
SHIM_FILES: dict[str, bytes] = {
    "__init__.py": b"# Created by recycle-distill's patch_hub.py; removed by patch_hub.py --revert.\n",
    "expert.py": b"from recycle_distill.downstreams.cif_asr.expert import DownstreamExpert  # noqa: F401\n",
}


def shim_hashes() -> dict[str, str]:
    """The hashes :func:`tree_hashes` gives for a folder holding exactly :data:`SHIM_FILES`."""
    import hashlib

    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(SHIM_FILES.items())}


def plan_shim(tree: Tree, plan: Plan, created: dict) -> dict:
    """Plan creating the shim folder; returns the record of folders this tool created."""
    created = dict(created)
    if not tree.checkout:
        plan.lines.append(
            "  The cif_asr downstream is not registered in an installed s3prl (no files are added "
            "to site-packages); run it with: recycle-distill superb -d cif_asr ...")
        return created
    folder = tree.package / SHIM_KEY
    wanted = shim_hashes()
    if folder.exists() or folder.is_symlink():
        current = tree_hashes(folder) if folder.is_dir() and not folder.is_symlink() else None
        if current == wanted:
            plan.note("unchanged", folder, "cif_asr downstream already registered")
            if SHIM_KEY in created:
                created[SHIM_KEY] = wanted
        else:
            plan.warn(folder, "exists and is not patch_hub.py's cif_asr shim; left alone")
        return created
    plan.folders.append((folder, dict(SHIM_FILES)))
    plan.note("register", folder, "cif_asr downstream (expert.py re-exports recycle_distill's)")
    plan.changed += 1
    created[SHIM_KEY] = wanted
    return created


def plan_revert_shim(tree: Tree, plan: Plan, created: dict) -> dict:
    """Plan removing the shim folder this tool created; returns the record of those kept."""
    left = {}
    for key, hashes in sorted(created.items()):
        folder = tree.package / key
        if not folder.exists() and not folder.is_symlink():
            continue
        if folder.is_dir() and not folder.is_symlink() and tree_hashes(folder) == hashes:
            plan.tree_removals.append(folder)
            plan.note("remove", folder, "cif_asr downstream shim")
            plan.changed += 1
        else:
            plan.warn(folder, "changed since patch_hub.py created it; left alone")
            left[key] = hashes
    return left
