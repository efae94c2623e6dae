"""How far a lower-precision run's hidden states are from the fp32 run's, layer by layer.

Used by ``benchmarks/formats_quality.py`` and the precision tests. Only the valid (unpadded)
frames count: padded frames carry whatever the padding produced and no downstream reads
them. Two numbers per layer:

* relative L2 error ``||y - x||_F / ||x||_F`` over all valid frames of the batch (x the
  reference), the size of the error against the size of the signal;
* mean frame cosine ``mean_n cos(x_n, y_n)``, whether each frame still points the same way.

Both are computed in float64, so the measurement adds no rounding of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from recycle_distill.lab.analysis.similarity import mean_frame_cosine

__all__ = ["LayerError", "valid_frames", "relative_l2_error", "layer_errors", "worst_layer"]


@dataclass(frozen=True)
class LayerError:
    """One layer's agreement with the reference: ``layer`` index into ``hidden_states``."""

    layer: int
    relative_l2: float
    cosine: float

    def to_dict(self) -> dict:
        return asdict(self)


def valid_frames(hidden: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """(B, T, D) states -> (N, D) float64 rows of the frames that are not padding.

    ``padding_mask`` is (B, T) with True = padding, or None when nothing is padded.
    """
    if hidden.dim() != 3:
        raise ValueError(f"expected (B, T, D) hidden states, got shape {tuple(hidden.shape)}")
    hidden = hidden.detach().to(torch.float64)
    if padding_mask is None:
        return hidden.reshape(-1, hidden.shape[-1])
    if padding_mask.shape != hidden.shape[:2]:
        raise ValueError(f"padding mask {tuple(padding_mask.shape)} does not match states {tuple(hidden.shape)}")
    return hidden[~padding_mask.to(torch.bool)]


def relative_l2_error(reference: Tensor, candidate: Tensor) -> float:
    """``||candidate - reference|| / ||reference||`` (Frobenius, float64) of equal-shape tensors."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {tuple(reference.shape)} and {tuple(candidate.shape)}")
    reference = reference.to(torch.float64)
    norm = float(torch.linalg.vector_norm(reference))
    if norm == 0.0:
        raise ValueError("the reference is all zeros: relative error is undefined")
    return float(torch.linalg.vector_norm(candidate.to(torch.float64) - reference)) / norm


def layer_errors(reference: Sequence[Tensor], candidate: Sequence[Tensor],
                 padding_mask: Optional[Tensor] = None) -> list[LayerError]:
    """Per-layer error of ``candidate`` against ``reference``: N tensors (B, T, D) each.

    ``padding_mask`` (B, T), True = padding, is the reference run's; the same frames are
    compared in both.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference layers but {len(candidate)} candidate layers")
    errors = []
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        if ref.shape != cand.shape:
            raise ValueError(f"layer {index}: shapes differ: {tuple(ref.shape)} and {tuple(cand.shape)}")
        x, y = valid_frames(ref, padding_mask), valid_frames(cand, padding_mask)
        errors.append(LayerError(index, relative_l2_error(x, y), mean_frame_cosine(x, y)))
    return errors


def worst_layer(errors: Sequence[LayerError]) -> LayerError:
    """The layer with the largest relative L2 error (the first of equals)."""
    if not errors:
        raise ValueError("no layers")
    return max(errors, key=lambda error: error.relative_l2)
