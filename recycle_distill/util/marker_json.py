"""The ``recycle_distill`` block of a small JSON file we wrote (an export's ``config.json``, a
lab folder's marker): how a folder is recognised as ours, read without trusting the file."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

__all__ = ["MARKER_LIMIT", "our_block"]

MARKER_LIMIT = 1 << 20  # ours are a few kilobytes; a larger file is not ours


def our_block(path: str, limit: int = MARKER_LIMIT) -> Optional[dict[str, Any]]:
    """The ``recycle_distill`` dict of the JSON object at ``path``, or None when the file is
    missing, not a regular file, over ``limit`` bytes, not JSON, or has no such dict."""
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > limit:
            return None
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return None
    block = content.get("recycle_distill") if isinstance(content, dict) else None
    return block if isinstance(block, dict) else None
