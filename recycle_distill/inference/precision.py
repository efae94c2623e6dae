"""The one precision vocabulary: ``fp32 | bf16 | int8`` for inference, everywhere.

Hub entries and upstreams (``dtype=``), ``profile --dtype``, ``export --dtype`` and
:func:`recycle_distill.inference.optimize_for_inference` all take these names.
Training keeps its own ``train.precision`` (fp32 | bf16 | fp16: autocast, not weights).
"""

from __future__ import annotations

from typing import Union

import torch

from recycle_distill.util.messages import short_repr

PRECISIONS = ("fp32", "bf16", "int8")

# Spellings users reach for; each maps to one of PRECISIONS.
_ALIASES = {
    "float32": "fp32", "float": "fp32", "torch.float32": "fp32",
    "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "qint8": "int8",
}


def parse_precision(value: Union[str, torch.dtype, None], where: str = "dtype",
                    supported: tuple[str, ...] = PRECISIONS) -> str:
    """The canonical precision name of ``value`` (None means fp32).

    Args:
        value: ``"fp32"``, ``"bf16"``, ``"int8"``, an alias such as ``"bfloat16"``, or a
            torch dtype.
        where: the option's name, for the error message.
        supported: the names this caller accepts (a subset of :data:`PRECISIONS`).

    Raises:
        ValueError: naming the option, the bad value and the supported values.
    """
    if value is None:
        name = "fp32"
    elif isinstance(value, torch.dtype):
        name = _ALIASES.get(str(value), str(value))
    elif isinstance(value, str):
        name = _ALIASES.get(value.strip().lower(), value.strip().lower())
    else:
        raise ValueError(f"{where}: expected one of {', '.join(supported)}, got a {type(value).__name__}")
    if name not in supported:
        raise ValueError(f"{where}: unsupported precision {short_repr(value)}; choose one of {', '.join(supported)}")
    return name


def compute_dtype(precision: str) -> torch.dtype:
    """The floating dtype activations run in: bfloat16 for bf16, float32 otherwise (int8 Linears
    take and return float32)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32
