"""The student families; each module swaps the blocks that make it different."""

from .armhubert import ARMHuBERT
from .fithubert import FitHuBERT
from .maskhubert import MaskHuBERT
from .starhubert import STaRHuBERT
from .student import StudentModel, StudentOutput

FAMILIES: dict[str, type[StudentModel]] = {
    "armhubert": ARMHuBERT,
    "maskhubert": MaskHuBERT,
    "starhubert": STaRHuBERT,
    "fithubert": FitHuBERT,
}

__all__ = ["ARMHuBERT", "FitHuBERT", "MaskHuBERT", "STaRHuBERT", "StudentModel", "StudentOutput", "FAMILIES"]
