"""The student families; each module swaps the blocks that make it different."""

from ..families import FAMILY_NAMES
from .armhubert import ARMHuBERT
from .fithubert import FitHuBERT
from .maskhubert import MaskHuBERT
from .starhubert import STaRHuBERT
from .student import StudentModel, StudentOutput

_CLASSES = {cls.family: cls for cls in (ARMHuBERT, MaskHuBERT, STaRHuBERT, FitHuBERT)}
if set(_CLASSES) != set(FAMILY_NAMES):  # a new family needs its name in recycle_distill/families.py
    raise ImportError(f"student classes {sorted(_CLASSES)} do not match FAMILY_NAMES {FAMILY_NAMES}")
FAMILIES: dict[str, type[StudentModel]] = {name: _CLASSES[name] for name in FAMILY_NAMES}

__all__ = ["ARMHuBERT", "FitHuBERT", "MaskHuBERT", "STaRHuBERT", "StudentModel", "StudentOutput", "FAMILIES"]
