"""Checks for keyword options of the Python API (``optimize=``, ``threads=``, ...).

A config file's values go through :mod:`recycle_distill.util.config_check`; these are for the
options a caller passes to a function, where ``optimize="no"`` would otherwise count as true.
Each raises ValueError naming the option, with the value bounded (:func:`short_repr`).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Optional

from recycle_distill.util.messages import short_repr

__all__ = ["check_bool", "check_whole_number", "check_seconds"]


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a real ``bool`` (numpy's too); else ValueError naming option ``name``.

    Strings are refused, ``"no"`` and ``"false"`` included: they would count as true.
    """
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool"):
        return bool(value)
    raise ValueError(f"{name}: expected True or False, got {short_repr(value)} ({type(value).__name__})")


def check_whole_number(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int if it is a whole number (not a bool) in ``[low, high]``; else ValueError."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name}: expected a whole number from {low} to {high}, "
                         f"got {short_repr(value)} ({type(value).__name__})")
    if not low <= value <= high:
        raise ValueError(f"{name}: expected a whole number from {low} to {high}, got {short_repr(value)}")
    return int(value)


def check_seconds(value: Any, name: str) -> Optional[float]:
    """``value`` as a float number of seconds (finite, > 0), or None for None; else ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a number of seconds above 0 (or None for no limit), "
                         f"got {short_repr(value)}")
    return float(value)
