"""Bounded text for error messages: a hostile value must not make an error message huge.

Two helpers, for the two ways a message shows what the user gave:

* :func:`short_repr` quotes a value (``'fp16'``, ``[1, 2, ...]``): option values, keys, names;
* :func:`plain` shows a text unquoted (a path, a tensor name): unchanged when it is short and
  printable, else with line breaks and other control characters escaped and the middle cut.

Neither lets a newline through, so a value cannot start a fake ``ERROR:`` line of its own.
"""

from __future__ import annotations

import os
import reprlib
from typing import Any

__all__ = ["short_repr", "plain"]

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlong = 40

# A path this long is shown whole; longer ones keep their start and their end (the file name).
PLAIN_LIMIT = 300


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, never raising and never walking far.

    Containers show their first few items only (so shared YAML aliases are not expanded), and
    huge integers, whose full repr Python refuses to build, are shortened as well.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001  (a repr that fails must not hide the real error)
        if isinstance(value, int):  # past Python's limit on digits in a repr
            text = f"<int of about {int(abs(value).bit_length() * 0.30103) + 1} digits>"
        else:
            text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plain(text: Any, limit: int = PLAIN_LIMIT) -> str:
    """``text`` (a str, path or bytes) for a message, unquoted and on one line, at most ``limit`` characters.

    Printable text up to ``limit`` characters comes back unchanged, so ordinary paths read as
    before; control characters (line breaks, tabs, escapes) are written as Python escapes
    (``\\n``) and longer text keeps its first and last characters around ``...``. Anything
    else is shown as :func:`short_repr` shows it.
    """
    if isinstance(text, os.PathLike):
        try:
            text = os.fspath(text)
        except Exception:  # noqa: BLE001
            return short_repr(text, limit)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    if not isinstance(text, str):
        return short_repr(text, limit)
    limit = max(limit, 10)
    if len(text) <= limit and text.isprintable():
        return text
    head, tail = (text, "") if len(text) <= limit else (text[: limit // 2], text[-(limit // 2):])
    head, tail = _escape(head), _escape(tail)
    if not tail and len(head) <= limit:
        return head
    keep = (limit - 3) // 2
    return head[:keep] + "..." + (tail[-keep:] if tail else head[-keep:])


def _escape(text: str) -> str:
    """Every character that is not printable as its Python escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
