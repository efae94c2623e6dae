"""Weights that hold NaN or infinity: refused on load and on export, with the tensors named.

A student whose weights hold one NaN computes NaN everywhere, so a file with one is refused
where it is read (compact files, Hugging Face folders and their ``projection_heads.safetensors``,
Lightning checkpoints and state dicts: :func:`check_finite_on_load`) and where one is written
(``export`` in every format, ``convert``: :func:`check_finite_on_export`).

To look at such a file anyway (which tensors, which values), load it with
``load_student(..., allow_non_finite=True)`` or set ``RECYCLE_DISTILL_ALLOW_NON_FINITE=1``
(for the command line and S3PRL): loading then warns instead. Exports are always refused.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Mapping

import torch

from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.util.messages import plain

logger = logging.getLogger(__name__)

__all__ = ["ALLOW_NON_FINITE_ENV", "NonFiniteWeightsError", "non_finite_keys", "check_finite_on_load",
           "check_finite_on_export", "non_finite_allowed"]

ALLOW_NON_FINITE_ENV = "RECYCLE_DISTILL_ALLOW_NON_FINITE"
# Tensor names a message shows (the count says how many more there are).
SHOWN = 3


class NonFiniteWeightsError(CheckpointError):
    """Weights holding NaN or infinite values, refused on load or export; the message names them."""


def non_finite_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The keys of the floating-point tensors of ``state`` holding a NaN or an infinity, in order."""
    return [key for key, value in state.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel()
            and not bool(torch.isfinite(value).all())]


def non_finite_allowed(allow: bool = False) -> bool:
    """``allow``, or ``RECYCLE_DISTILL_ALLOW_NON_FINITE=1`` in the environment."""
    return allow or os.environ.get(ALLOW_NON_FINITE_ENV, "").strip() == "1"


def _describe(keys: Iterable[str]) -> str:
    """``N weight tensor(s) hold NaN or infinite values (a, b, c, and 4 more)``, names bounded."""
    keys = list(keys)
    shown = ", ".join(plain(key, 100) for key in keys[:SHOWN])
    more = f", and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return f"{len(keys)} weight tensor(s) hold NaN or infinite values ({shown}{more})"


def check_finite_on_load(state: Mapping[str, torch.Tensor], where: str, allow: bool = False) -> None:
    """Refuse ``state`` (read from ``where``) if a tensor holds NaN/inf, unless allowed (then warn).

    Raises:
        NonFiniteWeightsError: one line naming the file and the first tensors.
    """
    broken = non_finite_keys(state)
    if not broken:
        return
    if non_finite_allowed(allow):
        logger.warning("%s: %s; loaded anyway (allow_non_finite / %s=1): its outputs will not be finite",
                       plain(where), _describe(broken), ALLOW_NON_FINITE_ENV)
        return
    raise NonFiniteWeightsError(
        f"{plain(where)}: {_describe(broken)}; refused (to inspect them, load with allow_non_finite=True "
        f"or set {ALLOW_NON_FINITE_ENV}=1)"
    )


def check_finite_on_export(state: Mapping[str, torch.Tensor], path: str) -> None:
    """Refuse to write ``state`` to ``path`` if a tensor holds NaN/inf (no opt-out).

    Raises:
        NonFiniteWeightsError: ``not exporting <path>: ...`` naming the first tensors.
    """
    broken = non_finite_keys(state)
    if broken:
        raise NonFiniteWeightsError(f"not exporting {plain(path)}: {_describe(broken)}")
