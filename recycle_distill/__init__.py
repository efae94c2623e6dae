"""recycle-distill: Recycle-and-Distill students (ARMHuBERT, MaskHuBERT, STaRHuBERT, FitHuBERT)
in pure PyTorch, as S3PRL upstreams, with a distillation trainer."""

from .builder import build_student, list_presets
from .config import ConfigError, StudentConfig
from .models import FAMILIES, StudentModel, StudentOutput

__version__ = "0.1.0"

__all__ = [
    "build_student",
    "list_presets",
    "ConfigError",
    "StudentConfig",
    "FAMILIES",
    "StudentModel",
    "StudentOutput",
    "__version__",
]
