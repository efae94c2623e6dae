"""recycle-distill: Recycle-and-Distill students (ARMHuBERT, MaskHuBERT, STaRHuBERT, FitHuBERT)
in pure PyTorch, as S3PRL upstreams, with a distillation trainer."""

from __future__ import annotations

from recycle_distill.util.lazy import lazy_attributes
from recycle_distill.util.version import VERSION

__version__ = VERSION

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

# The public names are imported on first access (PEP 562), not here: they pull in torch, and
# torch-free subpackages such as recycle_distill.s3prl.patch (run by patch_hub.py with only
# the standard library and PyYAML) must be importable without it.
_LAZY = {
    "build_student": ".students.build",
    "list_presets": ".students.build",
    "ConfigError": ".students.config",
    "StudentConfig": ".students.config",
    "FAMILIES": ".students",
    "StudentModel": ".students",
    "StudentOutput": ".students",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
