"""One type check for every config value: the student's ``distiller:`` keys and the trainer's.

Both configs are dataclasses whose annotations (strings, under ``from __future__ import
annotations``) say what a key holds; :func:`coerce` takes a value as YAML or a dict gave it and
returns it in that type, or raises :class:`TypeMismatch` naming the expected type. Each config
words its own message around that.

Rules: ``bool`` is never an int; ``int`` is never a bool; ``float`` takes ints and numeric
strings (YAML 1.1 reads ``5e-3``, without a dot, as a string); typed lists take lists or
tuples of that item type; a plain ``list`` also takes one string as a one-item list;
``Optional[...]`` takes None.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["TypeMismatch", "coerce"]


class TypeMismatch(ValueError):
    """A value of the wrong type; ``expected`` is the annotation without ``Optional``."""

    def __init__(self, expected: str) -> None:
        super().__init__(f"expected {expected}")
        self.expected = expected


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _float(value: Any) -> float:
    if _is_int(value) or isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return float(value)  # ValueError -> TypeMismatch below
    raise ValueError


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], list]:
    def convert(value: Any) -> list:
        if isinstance(value, (list, tuple)) and all(check(item) for item in value):
            return list(value)
        raise ValueError
    return convert


def _plain_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [value]
    raise ValueError


def _exact(check: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if check(value):
            return value
        raise ValueError
    return convert


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "bool": _exact(lambda v: isinstance(v, bool)),
    "int": _exact(_is_int),
    "float": _float,
    "str": _exact(lambda v: isinstance(v, str)),
    "list": _plain_list,
    "list[int]": _list_of(_is_int),
    "list[bool]": _list_of(lambda v: isinstance(v, bool)),
    "list[ConvLayerSpec]": _list_of(lambda v: isinstance(v, tuple)),
}


def coerce(value: Any, annotation: str) -> Any:
    """``value`` as the type ``annotation`` names (see the module docstring).

    Raises:
        TypeMismatch: the value does not fit; None for a non-Optional annotation included.
    """
    optional = annotation.startswith("Optional[") and annotation.endswith("]")
    base = annotation[len("Optional["):-1] if optional else annotation
    if base not in _CONVERTERS:
        raise AssertionError(f"no type check for {annotation}")
    if value is None:
        if optional:
            return None
        raise TypeMismatch(base)
    try:
        return _CONVERTERS[base](value)
    except (ValueError, TypeError, OverflowError):
        raise TypeMismatch(base) from None
