"""The student classes by family name: a live view of :data:`recycle_distill.families.FAMILIES`.

Each row names its class as ``"module:Class"``; the class is imported on first use, so a row
registered at run time (:func:`recycle_distill.families.register_family`) is a family here too,
and removing a row removes it here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from functools import lru_cache

from recycle_distill import families
from recycle_distill.util.messages import plain, short_repr
from recycle_distill.students.model import StudentModel

__all__ = ["FAMILIES", "student_class"]


@lru_cache(maxsize=None)
def _import_class(spec: str, name: str) -> type[StudentModel]:
    """The class ``spec`` (``"module:Class"``) of the family ``name``, checked."""
    module_name, _, attribute = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), attribute, None)
    if not (isinstance(cls, type) and issubclass(cls, StudentModel)):
        raise ImportError(f"family {short_repr(name)}: {plain(spec, 200)} is not a StudentModel subclass")
    if cls.family != name:  # model.family names the family in errors and exports
        raise ImportError(f"family {short_repr(name)}: {plain(spec, 200)} says family = {short_repr(cls.family)}; "
                          f"set it to {short_repr(name)}")
    return cls


def student_class(name: str) -> type[StudentModel]:
    """The :class:`StudentModel` subclass of family ``name`` (``KeyError`` for an unknown one)."""
    row = families.family(name)  # a KeyError with the name bounded
    return _import_class(row.student_class, row.name)


class _StudentClasses(Mapping):
    """name -> class, in table order; reads the table on every access (no copy to go stale)."""

    def __getitem__(self, name: str) -> type[StudentModel]:
        return student_class(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(families.FAMILIES))

    def __len__(self) -> int:
        return len(families.FAMILIES)

    def __contains__(self, name: object) -> bool:
        return name in families.FAMILIES

    def __repr__(self) -> str:
        return f"FAMILIES({', '.join(families.FAMILIES)})"


FAMILIES: Mapping[str, type[StudentModel]] = _StudentClasses()
