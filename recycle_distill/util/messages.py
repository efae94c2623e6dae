"""Bounded text for error messages: a hostile value must not make an error message huge."""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["short_repr"]

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlong = 40


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, never raising and never walking far.

    Containers show their first few items only (so shared YAML aliases are not expanded), and
    huge integers, whose full repr Python refuses to build, are shortened as well.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001  (a repr that fails must not hide the real error)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
