"""The student classes by family name, in the order of :data:`recycle_distill.families.FAMILY_NAMES`."""

from recycle_distill.families import FAMILY_NAMES
from recycle_distill.students.armhubert import ARMHuBERT
from recycle_distill.students.fithubert import FitHuBERT
from recycle_distill.students.maskhubert import MaskHuBERT
from recycle_distill.students.model import StudentModel
from recycle_distill.students.starhubert import STaRHuBERT

_CLASSES = {cls.family: cls for cls in (ARMHuBERT, MaskHuBERT, STaRHuBERT, FitHuBERT)}
if set(_CLASSES) != set(FAMILY_NAMES):  # a new family needs its name in recycle_distill/families.py
    raise ImportError(f"student classes {sorted(_CLASSES)} do not match FAMILY_NAMES {FAMILY_NAMES}")
FAMILIES: dict[str, type[StudentModel]] = {name: _CLASSES[name] for name in FAMILY_NAMES}
