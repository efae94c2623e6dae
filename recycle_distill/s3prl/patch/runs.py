"""A whole run: the manifest it reads and writes, what it checks before writing, the patch and
revert plans, and the lock that keeps runs on one tree apart.

Sections (formerly one module each): manifest, preflight, operations, lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from recycle_distill.util.atomic import node_kind
from recycle_distill.util.messages import plain, short_repr
from recycle_distill.s3prl.patch.base import BACKUP_SUFFIX, TASKS, RefusedError, Tree, read_if_file
from recycle_distill.s3prl.patch.configs import plan_configs, plan_revert_configs
from recycle_distill.s3prl.patch.inserts import INSERTS, plan_inserts, plan_revert_inserts
from recycle_distill.s3prl.patch.plan import Plan, Write
from recycle_distill.s3prl.patch.registration import (
    FAMILIES,
    plan_copies,
    plan_hub,
    plan_revert_copies,
    plan_revert_hub,
    plan_revert_shim,
    plan_shim,
    shim_keys,
)

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: no flock; runs are not serialised there)
    fcntl = None  # type: ignore[assignment]


# -------------------- manifest --------------------------------------------------------------
# The manifest next to hub.py: which files a run patched and which folders it copied or created.
#
# Backups alone cannot tell ``--revert`` which copied folders are ours, so the manifest records
# each folder's file hashes; a folder is only removed while it still matches them.
#
# The manifest is a file in someone else's tree and is never trusted: only the entries this tool
# writes itself are accepted (``upstream/<family>`` copies, the ``downstream/<name>`` shims of
# our own downstreams, ``registration.shim_keys()``, the patched ``hub.py``, task configs and
# the S3PRL modules given a block, ``inserts.INSERTS``), each a plain relative name that stays
# inside the tree and is not a symlink, with a non-empty hash record.  Anything else is reported and ignored, so
# a hand-edited or hostile manifest cannot make ``--revert`` touch paths outside the tree or
# remove a folder it did not create.


MANIFEST_NAME = ".recycle-distill-manifest.json"
COPY_KEYS = frozenset(f"upstream/{family}" for family in FAMILIES)
PATCHED_KEYS = frozenset({"hub.py", *(f"downstream/{task.config}" for task in TASKS),
                          *(insert.key for insert in INSERTS)})


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
        "created": _folders(tree, plan, path, data.get("created"), shim_keys()),
        "pending": _folders(tree, plan, path, data.get("pending"), COPY_KEYS),
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


def manifest_bytes(patched: set[str], copied: dict, created: dict, pending: dict | None = None) -> bytes:
    """The manifest's content.  ``pending``: the hashes of the copies a run is replacing (a run
    stopped part way may leave either the old or the new copy; both are ours)."""
    manifest = {"tool": "recycle-distill patch_hub.py", "format": 1,
                "patched": sorted(patched), "copied": dict(sorted(copied.items()))}
    if created:
        manifest["created"] = dict(sorted(created.items()))
    if pending:
        manifest["pending"] = dict(sorted(pending.items()))
    return (json.dumps(manifest, indent=2) + "\n").encode()


def plan_manifest(tree: Tree, plan: Plan, patched: set[str], copied: dict, created: dict | None = None,
                  pending: dict | None = None) -> None:
    """Plan writing the manifest, or removing it when nothing is left to revert (done last)."""
    path = tree.package / MANIFEST_NAME
    plan.manifest = path
    old = read_if_file(path)
    created = created or {}
    if not patched and not copied and not created:
        if old is not None:
            plan.removals.append(path)
        return
    new = manifest_bytes(patched, copied, created, pending)
    if new != old:
        plan.write(path, old, new, show_diff=False)


def plan_journal(tree: Tree, plan: Plan, patched: set[str], copied: dict, created: dict, replacing: dict) -> None:
    """Plan writing, before anything else, the manifest as it will be once the patch is done, plus
    the copies it replaces: a patch stopped part way then leaves nothing ``--revert`` does not know."""
    path = tree.package / MANIFEST_NAME
    if not (plan.copies or plan.folders or any(write.path != path for write in plan.writes)):
        return
    if not patched and not copied and not created:
        return
    new = manifest_bytes(patched, copied, created, replacing)
    old = read_if_file(path)
    if new != old:
        plan.journal = Write(path, old, new, "")


# -------------------- preflight -------------------------------------------------------------
# Before a run writes anything: clear what an interrupted run left, check every target.
#
# An unwritable folder found only while writing would leave the tree half patched, so every
# folder a plan writes into, replaces in or removes from is checked first and the run is refused
# (nothing written) if any is not writable.  Temp files and folders are named
# ``.<name>.<8 random characters>.tmp`` next to their target (files.py); one left by a killed run
# is removed by the next run, which recognises it by that exact pattern next to a target it knows.


def _known_targets(tree: Tree, copies: bool = True) -> list[Path]:
    """Every file or folder a patch or revert may write (temps are made next to these);
    ``copies``: include the ``--copy`` folders ``upstream/<family>``."""

    targets = [tree.package / "hub.py", tree.package / MANIFEST_NAME]
    for insert in INSERTS:
        path = tree.package / insert.key
        targets += [path, path.resolve() if path.exists() else path]
    targets += [tree.package / key for key in sorted(shim_keys())]
    if copies:
        targets += [tree.package / "upstream" / family for family in FAMILIES]
    for task in TASKS:
        config = tree.downstream / task.config
        targets += [config, config.resolve() if config.exists() else config]
    targets += [path.with_name(path.name + BACKUP_SUFFIX) for path in list(targets)]
    return targets


def plan_stale_temps(tree: Tree, plan: Plan) -> None:
    """Plan removing the temp files/folders an interrupted run left next to our targets."""
    seen = set()
    for target in _known_targets(tree):
        folder = target.parent
        if not folder.is_dir():
            continue
        pattern = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
        for entry in folder.iterdir():
            if entry in seen or not pattern.fullmatch(entry.name) or entry.is_symlink():
                continue
            seen.add(entry)
            if entry.is_dir():
                plan.tree_removals.append(entry)
            else:
                plan.removals.append(entry)
            plan.note("clean", entry, "temporary file left by an interrupted run")


def check_inside_tree(tree: Tree, copies: bool = True) -> None:
    """Raise RefusedError naming the first target that leads outside the tree.

    Every file and folder a patch or revert may read, write, back up or remove (hub.py, the task
    configs and the folders holding them, the files S3PRL's own symlinks point to, the backups,
    the shims, the ``--copy`` folders, the manifest) must resolve, symlinks followed, to a path
    inside the tree given: a symlink within the tree (S3PRL's sv_voxceleb1 config) is followed,
    one leading outside refuses the whole run before anything is written. ``copies=False`` leaves
    out the ``--copy`` folders: a run that copies nothing does not write them, and a revert reaches
    them only through manifest entries, each checked on its own (an entry leading outside is
    ignored with a warning, the rest of the tree is still reverted).
    """
    root = os.path.realpath(tree.root)
    for target in _known_targets(tree, copies):
        real = os.path.realpath(target)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise RefusedError(f"{plain(tree.label(target))} leads outside the S3PRL tree (it resolves to "
                               f"{plain(real)}); nothing was changed (patch_hub.py writes only inside "
                               f"{plain(root)})")
        kind = node_kind(target)
        if kind not in (None, "regular file", "folder"):
            raise RefusedError(f"{plain(tree.label(target))} is a {kind}, not a regular file or folder; nothing "
                               "was changed")


def check_writable(plan: Plan) -> None:
    """Raise RefusedError naming every folder the plan needs to write but cannot."""
    folders = {write.path.parent for write in plan.writes}
    folders |= {dst.parent for _, dst in plan.copies}
    folders |= {folder.parent for folder, _ in plan.folders}
    folders |= {path.parent for path in plan.removals}
    folders |= {path.parent for path in plan.tree_removals}
    folders |= {path for path in plan.tree_removals}  # rmtree empties it first
    blocked = sorted(str(plan.tree.label(folder)) for folder in folders
                     if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK))
    if blocked:
        raise RefusedError("cannot write in " + ", ".join(blocked) + "; nothing was changed (fix the permissions "
                           "and run again)")


# -------------------- operations ------------------------------------------------------------
# The two runs, patch and revert, planned from the per-target steps.
#
# The order of the steps is the order of the report lines and of the writes.  The manifest is
# planned last because it records what the other steps leave behind; a patch also writes it
# first, as a journal of every change it is about to make (plan_journal), and a revert rewrites
# it only after its own changes (plan.apply), so a run stopped part way is always revertible.


def plan_patch(tree: Tree, copy: bool, upstreams: Path, shipped_configs: Path) -> Plan:
    """Plan registering the upstreams and tweaking the configs.

    ``upstreams`` is the folder ``--copy`` copies the families from; ``shipped_configs`` the
    pre-patched configs the report points to when the tree has none.
    """
    check_inside_tree(tree, copies=copy)
    plan = Plan(tree)
    plan_stale_temps(tree, plan)
    manifest = read_manifest(tree, plan)
    replacing: dict = {}
    if copy:
        copied = plan_copies(tree, plan, manifest, upstreams, replacing)
        pending: dict = {}
    else:
        copied = dict(manifest.get("copied") or {})
        pending = dict(manifest.get("pending") or {})
    patched = {entry for entry in manifest.get("patched") or [] if isinstance(entry, str)}
    if plan_hub(tree, plan, copy):
        patched.add("hub.py")
    patched |= plan_inserts(tree, plan)
    patched |= {f"downstream/{config}" for config in plan_configs(tree, plan, shipped_configs)}
    created = plan_shim(tree, plan, manifest.get("created") or {})
    plan_manifest(tree, plan, patched, copied, created, pending)
    plan_journal(tree, plan, patched, copied, created, {**pending, **replacing})
    return plan


def plan_revert(tree: Tree) -> Plan:
    """Plan undoing a previous run: restore backups, drop the hub block and the copies."""
    check_inside_tree(tree, copies=False)
    plan = Plan(tree)
    plan_stale_temps(tree, plan)
    manifest = read_manifest(tree, plan)
    left_patched = set()
    if not plan_revert_hub(plan, (tree.package / "hub.py").resolve()):
        left_patched.add("hub.py")
    left_patched |= plan_revert_inserts(tree, plan)
    left_patched |= plan_revert_configs(tree, plan)
    left_copied = plan_revert_copies(tree, plan, manifest)
    left_created = plan_revert_shim(tree, plan, manifest.get("created") or {})
    plan_manifest(tree, plan, left_patched, left_copied, left_created)
    return plan


# -------------------- lock ------------------------------------------------------------------
# One patch_hub run at a time per S3PRL tree: an exclusive ``flock`` on the package folder.
#
# A patch and a revert running together could each read a config before the other wrote it and
# lose an original.  The lock is taken on the folder that holds ``hub.py`` (a directory that
# already exists and is never replaced, unlike the files we rewrite through os.replace), so it
# adds nothing to the tree: a reverted tree stays byte for byte what it was.  ``flock`` locks are
# released by the kernel when the process dies, so a killed run never leaves the tree locked.


DEFAULT_TIMEOUT = 60.0  # seconds a run waits for another one to finish


@contextlib.contextmanager
def tree_lock(folder: Path, timeout: float = DEFAULT_TIMEOUT,
              on_wait: Optional[Callable[[], None]] = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` for the body; wait up to ``timeout`` seconds.

    ``on_wait`` is called once if another run holds the lock.  Raises RefusedError when the
    lock is still held after ``timeout``.
    """
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                if time.monotonic() >= deadline:
                    raise RefusedError(f"{folder} is busy: another patch_hub.py run holds it "
                                       f"(waited {timeout:g} s); try again when it has finished") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
