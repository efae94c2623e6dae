"""The one config checker: unknown keys (with a "did you mean"), types, ranges, one error class.

Every config of the package (the student's ``distiller:`` section, the training YAML, the
``cif_asr`` downstream's sections) is a set of dataclasses read from a mapping; each checks its
values with the functions here and raises :class:`ConfigError`. The wording of a message stays
with its config (each names keys its own way: ``config key 'x'``, ``train.x``, ``model.x``), so
these functions take a ``message`` callback or return a verdict instead of words.

* :func:`check_known` refuses the first key outside a known set, naming the closest valid one.
* :func:`check_type` puts a value in its annotation's type (the rules of
  :func:`recycle_distill.util.coerce.coerce`: a ``bool`` is never a number and no number a ``bool``).
* :class:`Range` and :func:`is_number` say whether a number is of the wanted kind and range.

Standard library only (with :mod:`recycle_distill.util`), so torch-free tools can check configs.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Optional

from recycle_distill.util.coerce import TypeMismatch, coerce

__all__ = ["ConfigError", "Range", "check_known", "check_type", "did_you_mean", "is_number", "unknown_keys"]

# How alike a typo must be to a valid key to be suggested (difflib's ratio; 1.0 = equal).
DEFAULT_CUTOFF = 0.6


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key.

    The command line exits with status 2 for it (it matches the class name ``ConfigError``).
    """


def did_you_mean(word: str, candidates: Iterable[str], prefix: str = "", cutoff: float = DEFAULT_CUTOFF) -> str:
    """``"; did you mean '<prefix><closest>'?"`` for the candidate closest to ``word``, or ``""``.

    Args:
        word: the unknown key as the message shows it.
        candidates: the valid keys.
        prefix: put before the suggestion (``"train."`` suggests ``'train.batch_size'``).
        cutoff: the least similarity (0..1) worth suggesting.
    """
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def unknown_keys(keys: Iterable[Any], known: Collection[Any]) -> list[Any]:
    """The keys not in ``known``, in their order."""
    return [key for key in keys if key not in known]


def check_known(
    keys: Iterable[Any],
    known: Collection[str],
    message: Callable[[str, str], str],
    *,
    prefix: str = "",
    cutoff: float = DEFAULT_CUTOFF,
    show: Callable[[Any], str] = str,
) -> None:
    """Raise :class:`ConfigError` for the first of ``keys`` not in ``known``.

    Args:
        keys: the keys a mapping holds (iterated in order).
        known: the valid keys (also the candidates of the suggestion).
        message: ``(shown key, suggestion) -> message``; the suggestion is ``""`` or
            ``"; did you mean '...'?"`` (:func:`did_you_mean`).
        prefix, cutoff: of the suggestion.
        show: how the message shows a key (``str``; a bounded repr for hostile keys).
    """
    for key in unknown_keys(keys, known):
        shown = show(key)
        raise ConfigError(message(shown, did_you_mean(shown, known, prefix, cutoff)))


def check_type(value: Any, annotation: str, message: Callable[[str], str]) -> Any:
    """``value`` in the type ``annotation`` names (e.g. ``"Optional[float]"``), or
    :class:`ConfigError` with ``message(expected)``, ``expected`` being the annotation without
    ``Optional``. A None for a non-Optional annotation is a mismatch too."""
    try:
        return coerce(value, annotation)
    except TypeMismatch as err:
        raise ConfigError(message(err.expected)) from None


@dataclass(frozen=True)
class Range:
    """An interval of valid numbers; ``None`` = unbounded on that side.

    ``str()`` writes it as messages do: ``[0, 1)``, ``(0, inf)``, ``[1, inf)``.
    """

    low: Optional[float] = None
    high: Optional[float] = None
    low_closed: bool = True
    high_closed: bool = True

    def __contains__(self, value: float) -> bool:
        above_low = self.low is None or value > self.low or (self.low_closed and value == self.low)
        below_high = self.high is None or value < self.high or (self.high_closed and value == self.high)
        return above_low and below_high

    def __str__(self) -> str:
        left = "(-inf" if self.low is None else ("[" if self.low_closed else "(") + f"{self.low:g}"
        right = "inf)" if self.high is None else f"{self.high:g}" + ("]" if self.high_closed else ")")
        return f"{left}, {right}"


def is_number(value: Any, *, integer: bool = False, finite: bool = False, within: Optional[Range] = None) -> bool:
    """Whether ``value`` is an int (or, unless ``integer``, a float), never a bool, finite if
    asked, and inside ``within`` if given. Never raises (a string is simply not a number)."""
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        return False
    if finite and not math.isfinite(value):
        return False
    return within is None or value in within
