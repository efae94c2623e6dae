"""What patch_hub adds to an S3PRL tree besides config edits: the hub.py block that registers the
families, a shim per downstream (recycle_distill.downstreams.available(), e.g. cif_asr), and the
--copy upstream folders.

Sections (formerly one module each): registration, shim, copies.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from recycle_distill.families import FAMILY_NAMES
from recycle_distill.s3prl.patch.base import (
    PatchError,
    RefusedError,
    Tree,
    backup_path,
    tree_hashes,
    utf8_text,
)
from recycle_distill.s3prl.patch.inserts import (
    add_block,
    find_block,
    newline_of,
    plan_revert_block,
    remove_block,
)
from recycle_distill.s3prl.patch.plan import Plan, plan_backup


# -------------------- registration ----------------------------------------------------------
# Registering the student families in S3PRL's hub.py: a marked block of hubconf imports.
#
# S3PRL finds an upstream by name among the globals of ``s3prl/hub.py``, so registering means
# star-importing each family's hubconf there.  The block sits between marker comments so that it
# can be recognised, compared and removed again without a backup.


FAMILIES = FAMILY_NAMES
HUB_BEGIN = "# >>> recycle-distill upstreams >>>"
HUB_END = "# <<< recycle-distill upstreams <<<"


# ---------------------------------------------------------------- pure text functions


def hub_block(copy: bool, newline: str = "\n") -> str:
    """The marked block appended to hub.py, naming every family explicitly."""
    if copy:
        how = "folders copied into s3prl/upstream/ by patch_hub.py --copy"
        imports = [f"from s3prl.upstream.{family}.hubconf import *" for family in FAMILIES]
    else:
        how = "hubconfs of the installed recycle_distill package"
        imports = [f"from recycle_distill.upstreams.{family}.hubconf import *"
                   for family in FAMILIES]
    lines = [HUB_BEGIN,
             f"# Added by recycle-distill's patch_hub.py ({how});",
             "# undo with: python patch_hub.py --revert <s3prl root>",
             *imports,
             HUB_END]
    return newline.join(lines) + newline


def find_hub_block(text: str) -> tuple[int, int] | None:
    """Character span of the marked block (marker lines included), or None if absent.

    Raises PatchError when the markers are unbalanced or repeated.
    """
    return find_block(text, HUB_BEGIN, HUB_END)


def add_hub_block(text: str, copy: bool) -> str:
    """Append the block to hub.py's text, after a blank line."""
    return add_block(text, hub_block(copy, newline_of(text)))


def remove_hub_block(text: str) -> str:
    """Remove the marked block and the blank line add_hub_block put before it."""
    return remove_block(text, HUB_BEGIN, HUB_END)


# ---------------------------------------------------------------- planning


def plan_hub(tree: Tree, plan: Plan, copy: bool) -> bool:
    """Plan the hub.py registration; returns True when hub.py ends up patched by us."""
    hub = (tree.package / "hub.py").resolve()
    current = hub.read_bytes()
    try:
        text = utf8_text(current)
        span = find_hub_block(text)
    except PatchError as err:
        plan.warn(hub, f"{err}; left alone")
        return backup_path(hub).exists()
    if span is not None:
        if text[span[0]:span[1]] == hub_block(copy, newline_of(text)):
            plan.note("unchanged", hub, "upstreams already registered")
            return backup_path(hub).exists()
        previous = "a default run" if copy else "a --copy run"
        plan.warn(hub, "already has a recycle-distill block that differs from the expected one "
                       f"(written by {previous}, or edited); left alone. Run --revert first "
                       "to switch modes")
        return backup_path(hub).exists()
    new = add_hub_block(text, copy).encode("utf-8")
    plan_backup(plan, hub, current)
    plan.write(hub, current, new)
    source = "s3prl/upstream/<family>" if copy else "recycle_distill.upstreams"
    plan.note("register", hub, f"{', '.join(FAMILIES)} from {source}")
    plan.changed += 1
    return True


def plan_revert_hub(plan: Plan, hub: Path) -> bool:
    """Plan removing the registration from hub.py; returns False if something is left."""
    return plan_revert_block(plan, hub, HUB_BEGIN, HUB_END,
                             lambda original: [add_hub_block(original, copy) for copy in (False, True)],
                             restored="registration removed", what="recycle-distill block")


# -------------------- shim ------------------------------------------------------------------
# Each of our downstreams in an S3PRL git checkout: a two-file shim package per downstream.
#
# S3PRL's runner imports ``s3prl.downstream.<-d name>.expert``, so registering a downstream of
# ``recycle_distill/downstreams/`` (today ``cif_asr``, the CIF-HieraDist recognizer) means a
# folder ``s3prl/downstream/<name>/`` whose ``expert.py`` re-exports our ``DownstreamExpert``.
# patch_hub creates the folder, records the hashes of what it wrote in the manifest, and
# ``--revert`` removes the folder only while it still holds exactly that.  An installed s3prl
# gets no shim: ``recycle-distill superb -d <name>`` registers it at run time.


SHIM_INIT = b"# Created by recycle-distill's patch_hub.py; removed by patch_hub.py --revert.\n"


def downstream_names() -> list[str]:
    """Our downstreams, by :func:`recycle_distill.downstreams.available` (a folder scan, torch-free).

    Asked each time a run is planned rather than when this module is imported, so the answer is
    the package's folders as they are now (a test may add one).
    """
    from recycle_distill.downstreams import available

    return available()


def shim_key(name: str) -> str:
    """The manifest key of a downstream's shim folder, relative to the folder holding hub.py."""
    return f"downstream/{name}"


def shim_keys() -> frozenset[str]:
    """The manifest keys of every shim this tool may create (one per downstream)."""
    return frozenset(shim_key(name) for name in downstream_names())


def shim_files(name: str) -> dict[str, bytes]:
    """The shim of downstream ``name``: file name -> bytes."""
    expert = f"from recycle_distill.downstreams.{name}.expert import DownstreamExpert  # noqa: F401\n"
    return {"__init__.py": SHIM_INIT, "expert.py": expert.encode("utf-8")}


def shim_hashes(name: str) -> dict[str, str]:
    """The hashes :func:`tree_hashes` gives for a folder holding exactly :func:`shim_files`."""
    return {file: hashlib.sha256(data).hexdigest() for file, data in sorted(shim_files(name).items())}


def plan_shim(tree: Tree, plan: Plan, created: dict) -> dict:
    """Plan creating every downstream's shim folder; returns the record of folders this tool created."""
    created = dict(created)
    for name in downstream_names():
        if tree.checkout:
            _plan_one_shim(tree, plan, created, name)
        else:
            plan.lines.append(
                f"  The {name} downstream is not registered in an installed s3prl (no files are added "
                f"to site-packages); run it with: recycle-distill superb -d {name} ...")
    return created


def _plan_one_shim(tree: Tree, plan: Plan, created: dict, name: str) -> None:
    """Plan the shim of ``name`` in a checkout, updating ``created`` in place."""
    key = shim_key(name)
    folder = tree.package / key
    wanted = shim_hashes(name)
    if folder.exists() or folder.is_symlink():
        current = tree_hashes(folder) if folder.is_dir() and not folder.is_symlink() else None
        if current == wanted:
            plan.note("unchanged", folder, f"{name} downstream already registered")
            if key in created:
                created[key] = wanted
        else:
            plan.warn(folder, f"exists and is not patch_hub.py's {name} shim; left alone")
        return
    plan.folders.append((folder, shim_files(name)))
    plan.note("register", folder, f"{name} downstream (expert.py re-exports recycle_distill's)")
    plan.changed += 1
    created[key] = wanted


def plan_revert_shim(tree: Tree, plan: Plan, created: dict) -> dict:
    """Plan removing the shim folders this tool created; returns the record of those kept."""
    left = {}
    for key, hashes in sorted(created.items()):
        name = key.split("/", 1)[1]
        left.update(plan_remove_own_folders(tree, plan, {key: hashes}, f"{name} downstream shim",
                                            "changed since patch_hub.py created it; left alone"))
    return left


def plan_remove_own_folders(tree: Tree, plan: Plan, record: dict, what: str, changed: str,
                            also: dict | None = None) -> dict:
    """Plan removing each folder of ``record`` (key -> hashes) still exactly as this tool wrote it
    (or as ``also`` records it: the copy a run stopped part way was replacing).

    A folder that changed (or became a symlink) gets the ``changed`` warning and stays in the
    returned record; one that is gone is forgotten.
    """
    left = {}
    also = also or {}
    for key, hashes in sorted(record.items()):
        folder = tree.package / key
        if not folder.exists() and not folder.is_symlink():
            continue
        if folder.is_dir() and not folder.is_symlink() and tree_hashes(folder) in (hashes, also.get(key)):
            plan.tree_removals.append(folder)
            plan.note("remove", folder, what)
            plan.changed += 1
        else:
            plan.warn(folder, changed)
            left[key] = hashes
    return left


# -------------------- copies ----------------------------------------------------------------
# ``--copy``: copying ``upstreams/<family>`` into ``s3prl/upstream/<family>`` and removing it.
#
# For S3PRL setups that cannot install recycle_distill, the families are imported from inside
# S3PRL the way its own upstreams are.  Each copy's hashes go into the manifest, so a later run
# can tell its own (possibly stale) copy from a folder someone else put there.


def plan_copies(tree: Tree, plan: Plan, manifest: dict, source: Path, replacing: dict | None = None) -> dict:
    """Plan copying ``source``/<family> into s3prl/upstream/; returns the copied-folder record.

    ``source`` is the repository's ``upstreams/`` folder.  A copy of ours that is replaced (a
    stale one) gets its current hashes put in ``replacing`` (for the journal, see runs.py).
    """
    copied = dict(manifest.get("copied") or {})
    pending = manifest.get("pending") or {}
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
            if current is None or current not in (copied.get(key), pending.get(key)):
                plan.warn(dst, "exists and differs from upstreams/" + family + "; left alone")
                continue
            if replacing is not None:
                replacing[key] = current
        plan.copies.append((src, dst))
        plan.note("copy", dst, f"from {src}")
        copied[key] = wanted
        plan.changed += 1
    return copied


def plan_revert_copies(tree: Tree, plan: Plan, manifest: dict) -> dict:
    """Plan removing the folders a ``--copy`` run made; returns the record of those kept."""
    return plan_remove_own_folders(tree, plan, manifest.get("copied") or {}, "copied upstream",
                                   "changed since patch_hub.py --copy copied it; left alone",
                                   also=manifest.get("pending") or {})
