"""File helpers: atomic writes and folder copies, backups, and content hashes of folders.

Every write goes through a temp file (or folder) in the same directory and os.replace, so an
interrupted run leaves each file either as it was or as wanted, never half written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ..atomic import atomic_write as _atomic_write
from ..atomic import default_mode

BACKUP_SUFFIX = ".recycle-distill.orig"


def file_mode(path: Path) -> int:
    """The permission bits of ``path`` (what a replacement or backup should keep)."""
    return path.stat().st_mode & 0o7777


def read_if_file(path: Path) -> bytes | None:
    """The content of ``path``, or None when it is not a file."""
    return path.read_bytes() if path.is_file() else None


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` via a temp file ``.<name>.<random>.tmp`` in the same folder.

    The file mode is ``mode`` if given, else the mode of the file being replaced, else
    0o644 filtered by the umask.
    """
    if mode is None and not path.exists():
        mode = default_mode(0o644)
    _atomic_write(path, lambda temp: Path(temp).write_bytes(data), mode=mode, suffix=".tmp", fsync=True)


def backup_path(path: Path) -> Path:
    """Where the original of ``path`` is kept."""
    return path.with_name(path.name + BACKUP_SUFFIX)


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (ignoring __pycache__ and .pyc)."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if "__pycache__" in path.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        hashes[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def write_folder_atomically(dst: Path, files: dict[str, bytes]) -> None:
    """Create the folder ``dst`` holding ``files`` (name -> bytes) through a temp folder.

    Refuses (FileExistsError) if ``dst`` appeared meanwhile: a folder is only ever created.
    """
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            os.chmod(tmp / name, 0o644 & ~umask)
        os.chmod(tmp, 0o755 & ~umask)
        os.rename(tmp, dst)  # dst was absent when planned, and the tree lock keeps it so
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_tree_atomically(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` (replacing an existing ``dst``) through a temp folder."""
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        shutil.copytree(src, tmp / dst.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if dst.exists():
            os.replace(dst, tmp / "old")
        os.replace(tmp / dst.name, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
