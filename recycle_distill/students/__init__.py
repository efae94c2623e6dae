"""The students: config, build, the family classes and their blocks.

Three layers live here (docs/development.md, "Layers"): ``config`` (layer ``students.config``,
on util alone), ``blocks/`` (layer ``students.blocks``, the plain blocks) and the rest: model,
family classes, registry, build, waveforms and key layout. That rest, layer ``students``, may
import util, families, students.config, students.blocks and inference.blocks, the fast blocks
``build_student(..., blocks="fast")`` builds with; nothing above.

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
