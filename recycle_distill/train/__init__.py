"""The distillation trainer: ``recycle-distill train -c conf.yaml`` or :class:`Trainer`."""

from .config import TrainConfig, config_help, list_recipes, load_train_config

__all__ = ["TrainConfig", "config_help", "list_recipes", "load_train_config", "Trainer"]


def __getattr__(name: str):
    # The loop imports the teacher and data stacks; keep `import recycle_distill.train` light.
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    raise AttributeError(name)
