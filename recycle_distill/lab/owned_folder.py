"""Output folders the lab commands replace as a whole, and only when they wrote them.

A folder is ours when its marker file (``make-data.json``, ``smoke.json``) is a small JSON
object with a ``recycle_distill`` block naming the kind of output and a format version, and it
holds nothing but the entries that command writes (or a temporary entry a killed swap left,
see :func:`recycle_distill.util.atomic.atomic_write_folder`).
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Union

from recycle_distill.util.atomic import OutputError, check_output_folder, listing
from recycle_distill.util.marker_json import our_block
from recycle_distill.util.messages import plain

__all__ = ["check_owned_folder", "is_owned", "marker_block"]

PathLike = Union[str, "os.PathLike[str]"]
LEFTOVER = re.compile(r"\..+\.(tmp|old)-[A-Za-z0-9_]{8}\Z")


def marker_block(kind: str, format_version: int) -> dict:
    """The ``recycle_distill`` block a marker file starts with."""
    from recycle_distill.util.version import VERSION

    return {"kind": kind, "format_version": format_version, "version": VERSION}


def is_owned(folder: PathLike, marker: str, kind: str) -> bool:
    """True when ``folder/marker`` is a small JSON object whose ``recycle_distill`` block names ``kind``."""
    block = our_block(os.path.join(os.fspath(folder), marker))
    return block is not None and block.get("kind") == kind and isinstance(block.get("format_version"), int)


def check_owned_folder(out: PathLike, marker: str, kind: str, own: Iterable[str]) -> bool:
    """True when ``out`` holds an earlier ``kind`` output that may be replaced, False when it is
    missing or empty; :class:`OutputError` for a file (or device, FIFO), a non-empty folder that
    is not ours, or ours with entries added (each refusal names what is there)."""
    names = check_output_folder(out)
    if not names:
        return False
    if not is_owned(out, marker, kind):
        raise OutputError(f"{plain(out)}: not empty and not a {kind} folder (no {marker}); it holds "
                          f"{listing(names)}; refusing to write into it: choose a new or empty folder")
    allowed = {marker, *own}
    foreign = [name for name in names if name not in allowed and not LEFTOVER.match(name)]
    if foreign:
        raise OutputError(f"{plain(out)}: holds entries that {kind} does not write ({listing(foreign)}); "
                          f"refusing to replace it: move them out or choose another folder")
    return True
