"""recycle-distill: Recycle-and-Distill students (ARMHuBERT, MaskHuBERT, STaRHuBERT, FitHuBERT)
in pure PyTorch, as S3PRL upstreams, with a distillation trainer."""

from __future__ import annotations

import importlib
from typing import Any

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

# The public names are imported on first access (PEP 562), not here: they pull in torch, and
# torch-free subpackages such as recycle_distill.s3prl_patch (run by patch_hub.py with only
# the standard library and PyYAML) must be importable without it.
_LAZY = {
    "build_student": ".builder",
    "list_presets": ".builder",
    "ConfigError": ".config",
    "StudentConfig": ".config",
    "FAMILIES": ".models",
    "StudentModel": ".models",
    "StudentOutput": ".models",
}


def __getattr__(name: str) -> Any:
    """Import a lazy public name on first access and cache it in the module globals."""
    if name not in _LAZY:
        # AttributeError (not ImportError) lets `from recycle_distill import <submodule>`
        # fall through to importing the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the not yet imported lazy ones included."""
    return sorted(set(globals()) | set(_LAZY))
