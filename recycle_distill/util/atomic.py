"""Atomic writes: readers see the old output or the new one, never half of one.

The one implementation behind every file and folder we replace (checkpoints, compact students,
exports, the files patch_hub.py edits in an S3PRL tree). Standard library only:
``patch_hub.py`` runs without torch.

* A file (:func:`atomic_write`): the content goes to a temp file in the target's folder (so the
  final ``os.replace`` is a rename on one file system) that is removed again if writing fails;
  a process killed meanwhile leaves the temp file, whose name pattern lets the next run
  recognise and remove it.
* A folder (:func:`atomic_write_folder`): the whole new folder is written as a temporary
  sibling in the same parent; only when it is complete is the old folder renamed aside, the new
  one renamed in and the old one removed. A failure before that removes the temporary folder
  and leaves the old one as it was.
* What is at the target is checked first (:func:`check_output_file`,
  :func:`check_output_folder`): a device, a FIFO, a socket (or a folder where a file goes, a
  file where a folder goes) is refused with :class:`OutputError` before anything is written,
  whatever ``--force`` says. A symlink at the target is replaced, never written through: what it
  leads to is left alone.
* Results follow the umask, as ``open()`` and ``mkdir()`` would make them (``mkstemp`` and
  ``mkdtemp`` alone would leave 0o600 and 0o700).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from typing import Callable, Iterable, Optional, Union

from recycle_distill.util.messages import plain, short_repr

__all__ = [
    "atomic_write", "atomic_write_folder", "check_output_file", "check_output_folder", "default_mode",
    "node_kind", "listing", "OutputError",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_KINDS = {stat.S_IFDIR: "folder", stat.S_IFREG: "regular file", stat.S_IFCHR: "character device",
          stat.S_IFBLK: "block device", stat.S_IFIFO: "FIFO (named pipe)", stat.S_IFSOCK: "socket"}


class OutputError(ValueError):
    """An output we refuse to write: its path holds something that is not ours to replace."""


def default_mode(base: int = 0o666) -> int:
    """``base`` filtered by the process umask: the mode a plain ``open()`` (``mkdir()`` for 0o777) would give."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def listing(names: Iterable[str], limit: int = 8) -> str:
    """The first ``limit`` of ``names`` for a message, each escaped where needed, and how many more."""
    names = list(names)
    shown = [name if name.isprintable() and len(name) <= 80 else short_repr(name, 80) for name in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more


def node_kind(path: PathLike) -> Optional[str]:
    """What is at ``path``, symlinks followed: ``regular file``, ``folder``, ``character device``,
    ``block device``, ``FIFO (named pipe)``, ``socket``; None when nothing is (a dangling symlink,
    a missing folder on the way)."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return _KINDS.get(stat.S_IFMT(info.st_mode), "special file")


def check_output_file(path: PathLike) -> bool:
    """True when ``path`` holds a regular file (a write would replace it), False when nothing is
    there; :class:`OutputError` for anything else (a folder, a device, a FIFO, a socket)."""
    kind = node_kind(path)
    if kind is None:
        return False
    if kind != "regular file":
        raise OutputError(f"{plain(path)}: is a {kind}, not a regular file; refusing to write over it")
    return True


def check_output_folder(path: PathLike) -> Optional[list[str]]:
    """The sorted names in the folder ``path`` (a write would replace it), None when nothing is
    there; :class:`OutputError` for anything else (a file, a device, a FIFO, a socket)."""
    kind = node_kind(path)
    if kind is None:
        return None
    if kind != "folder":
        raise OutputError(f"{plain(path)}: is a {kind}, not a folder; refusing to write over it")
    return sorted(os.listdir(path))


def atomic_write(
    path: PathLike,
    write: Callable[[str], None],
    *,
    mode: Optional[int] = None,
    prefix: Optional[str] = None,
    suffix: str = "",
    fsync: bool = False,
) -> None:
    """Call ``write(temp_path)``, then rename the temp file over ``path``.

    Args:
        path: the file to create or replace (its folder is created if missing). Anything there
            but a regular file (or a symlink to one, which is replaced) is refused with
            :class:`OutputError` before ``write`` runs.
        write: fills the temp file given its path.
        mode: permission bits of the result; default: those of the file being replaced, else
            0o666 filtered by the umask (mkstemp alone would leave 0o600).
        prefix, suffix: the temp file's name is ``prefix + 8 random characters + suffix``
            (default prefix ``.<name>.``).
        fsync: flush the data to disk before the rename.
    """
    path = os.fspath(path)
    replacing = check_output_file(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if mode is None:
        mode = stat.S_IMODE(os.stat(path).st_mode) if replacing else default_mode()
    name = os.path.basename(path)
    handle, temp_path = tempfile.mkstemp(prefix=f".{name}." if prefix is None else prefix, suffix=suffix, dir=folder)
    os.close(handle)
    try:
        write(temp_path)
        if fsync:
            with open(temp_path, "rb+") as stream:
                os.fsync(stream.fileno())
        os.chmod(temp_path, mode)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def atomic_write_folder(path: PathLike, write: Callable[[str], None], *, mode: Optional[int] = None) -> None:
    """Call ``write(temp_folder)`` on an empty temporary sibling of ``path``, then swap it in.

    The old folder (if any) is renamed aside, the new one renamed in, then the old one removed;
    if ``write`` or the swap fails, the temporary folder is removed and the old folder is
    intact. A symlink at ``path`` is swapped like a folder (what it leads to is not touched).
    Where ``path`` is a mount point, holds the working directory, or its parent cannot be
    written, the temporary folder is made inside ``path`` and the entries are swapped one by one
    (each a rename; a failure puts the old ones back).

    Args:
        path: the folder to create or replace. Anything there but a folder (or a symlink to one)
            is refused with :class:`OutputError`; whether the folder may be replaced is the
            caller's decision (check its contents first).
        write: fills the temporary folder given its path.
        mode: permission bits of the folder; default: those of the folder being replaced, else
            0o777 filtered by the umask. The files ``write`` makes keep theirs.
    """
    path = os.fspath(path)
    names = check_output_folder(path)
    target = os.path.abspath(path)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    real_folder = names is not None and not os.path.islink(target)
    if mode is None:
        mode = stat.S_IMODE(os.stat(target).st_mode) if names is not None else default_mode(0o777)
    in_place = real_folder and (os.path.ismount(target) or not os.access(parent, os.W_OK) or _holds_cwd(target))
    temp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target if in_place else parent)
    try:
        write(temp)
        if not in_place:
            os.chmod(temp, mode)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if in_place:
        _swap_entries(temp, target)
    else:
        _swap_folder(temp, target)


def _holds_cwd(target: str) -> bool:
    """True when the working directory is ``target`` or inside it (``-o .``): it is not renamed away."""
    try:
        cwd, real = os.path.realpath(os.getcwd()), os.path.realpath(target)
    except OSError:
        return False
    return cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep)


def _swap_folder(temp: str, target: str) -> None:
    """Rename ``target`` (if anything is there) aside, ``temp`` in, then remove the old one."""
    parent, name = os.path.split(target)
    if not os.path.lexists(target):
        try:
            os.rename(temp, target)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return
    aside = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
    old = os.path.join(aside, name)
    try:
        os.rename(target, old)
    except BaseException:
        os.rmdir(aside)
        shutil.rmtree(temp, ignore_errors=True)
        raise
    try:
        os.rename(temp, target)
    except BaseException:
        os.rename(old, target)  # the old one back where it was
        os.rmdir(aside)
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _remove_old(aside)


def _swap_entries(temp: str, target: str) -> None:
    """Swap the entries of ``target`` for those of ``temp`` (a folder inside it), one rename each."""
    aside = tempfile.mkdtemp(prefix=os.path.basename(temp).replace(".tmp-", ".old-", 1)[:-8], dir=target)
    ours = {os.path.basename(temp), os.path.basename(aside)}
    moved_old: list[str] = []
    moved_new: list[str] = []
    try:
        for entry in sorted(set(os.listdir(target)) - ours):
            os.rename(os.path.join(target, entry), os.path.join(aside, entry))
            moved_old.append(entry)
        for entry in sorted(os.listdir(temp)):
            os.rename(os.path.join(temp, entry), os.path.join(target, entry))
            moved_new.append(entry)
    except BaseException:
        for entry in moved_new:
            os.rename(os.path.join(target, entry), os.path.join(temp, entry))
        for entry in moved_old:
            os.rename(os.path.join(aside, entry), os.path.join(target, entry))
        shutil.rmtree(temp, ignore_errors=True)
        os.rmdir(aside)
        raise
    os.rmdir(temp)
    _remove_old(aside)


def _remove_old(aside: str) -> None:
    """Remove the replaced output (symlinks in it are removed, never followed)."""
    shutil.rmtree(aside, ignore_errors=True)
    if os.path.lexists(aside):
        logger.warning("the new output is in place, but the old one could not be removed completely: %s",
                       plain(aside))
