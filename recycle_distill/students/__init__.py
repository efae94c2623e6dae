"""The students: config, build, the family classes and their blocks.

Names are imported on first access, so ``recycle_distill.students.blocks.masks`` (shared with the
teacher and the data loader) loads without the family classes.
"""

from recycle_distill.util.lazy import lazy_attributes

_LAZY = {
    "ARMHuBERT": ".armhubert",
    "FitHuBERT": ".fithubert",
    "MaskHuBERT": ".maskhubert",
    "STaRHuBERT": ".starhubert",
    "StudentModel": ".model",
    "StudentOutput": ".model",
    "FAMILIES": ".registry",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
