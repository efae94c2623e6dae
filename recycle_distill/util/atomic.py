"""Atomic file writes: readers see the old file or the new one, never half of one.

The one implementation behind every file we replace (checkpoints, compact students, the files
patch_hub.py edits in an S3PRL tree). Standard library only: ``patch_hub.py`` runs without torch.
The content goes to a temp file in the target's folder (so the final ``os.replace`` is a rename
on one file system) that is removed again if writing fails; a process killed meanwhile leaves
the temp file, whose name pattern lets the next run recognise and remove it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Optional, Union

__all__ = ["atomic_write", "default_mode"]

PathLike = Union[str, "os.PathLike[str]"]


def default_mode(base: int = 0o666) -> int:
    """``base`` filtered by the process umask: the mode a plain ``open()`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


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
        path: the file to create or replace (its folder is created if missing).
        write: fills the temp file given its path.
        mode: permission bits of the result; default: those of the file being replaced, else
            0o666 filtered by the umask (mkstemp alone would leave 0o600).
        prefix, suffix: the temp file's name is ``prefix + 8 random characters + suffix``
            (default prefix ``.<name>.``).
        fsync: flush the data to disk before the rename.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if mode is None:
        mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else default_mode()
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
