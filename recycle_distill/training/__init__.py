"""Distillation: the trainer, its config, objectives, the teacher, the distillation losses, data
and the shipped recipes (``recycle-distill train -c conf.yaml`` or :class:`Trainer`).

Names are imported on first access: ``recycle_distill.training.teacher`` and
``recycle_distill.training.losses`` load without the trainer or the student builder.

Layer ``training``: may import util, families, students.config, students.blocks,
inference.blocks, students, inference, checkpoint, hf_export, downstreams, s3prl (whose S3PRL
models the teacher runs) and recognizer; never lab or cli.
"""

from recycle_distill.util.lazy import lazy_attributes

_LAZY = {
    "TrainConfig": ".config",
    "config_help": ".config",
    "list_examples": ".config",
    "list_recipes": ".config",
    "load_train_config": ".config",
    "Trainer": ".trainer",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
