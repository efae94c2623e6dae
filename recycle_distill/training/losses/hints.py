"""Hint (layer-to-layer MSE) distillation: FitHuBERT's objective and its general form.

FitHuBERT regresses every teacher layer with the matching student head: MSE (mean over
B, T, D) per layer, layers 1..N-1 weighted 0.1 and the last 1.0, summed over layers.
:func:`hint_loss` takes any list of ``(student, teacher, weight)`` triples;
:func:`fithubert_hint_loss` builds FitHuBERT's list.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from recycle_distill.training.losses.common import cut_frames, cut_mask, loss_dtype

__all__ = ["layer_mse", "hint_loss", "fithubert_hint_pairs", "fithubert_hint_loss"]

HintPair = tuple[Tensor, Tensor, float]


def layer_mse(pred: Tensor, target: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
    """Mean squared error of one layer.

    Args:
        pred: (B, T, D) student output.
        target: (B, T_t >= T, D) teacher output, cut to its first T frames.
        padding_mask: None (every frame counts: ``mean`` over B*T*D, the reference) or a
            (B, T_p >= T) bool mask, True = pad: padded frames are dropped and the sum is
            divided by (valid frames) * D.

    Returns:
        A scalar, in float32 at least.
    """
    if pred.dim() != 3:
        raise ValueError(f"pred: expected (B, T, D), got shape {tuple(pred.shape)}")
    batch, num_frames, dim = pred.shape
    target = cut_frames(target, num_frames, "target")
    if target.shape[0] != batch or target.shape[2] != dim:
        raise ValueError(f"target has shape {tuple(target.shape)}, pred {tuple(pred.shape)} (time-major? transpose)")
    dtype = loss_dtype(pred, target)
    errors = (pred.to(dtype) - target.to(dtype)).square()
    padding = cut_mask(padding_mask, batch, num_frames, "padding_mask")
    if padding is None:
        return errors.mean()
    valid = ~padding.to(pred.device)
    # where, not multiply: non-finite values on padded frames must not leak in.
    total = torch.where(valid.unsqueeze(-1), errors, errors.new_zeros(())).sum()
    return total / (valid.sum().clamp_min(1).to(dtype) * dim)


def hint_loss(pairs: Sequence[HintPair], padding_mask: Optional[Tensor] = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of per-layer MSEs.

    Args:
        pairs: ``(student (B, T, D), teacher (B, T_t >= T, D), weight)`` triples.
        padding_mask: optional (B, T) bool, True = pad, on the student's frame grid (see
            :func:`layer_mse`); the same for every pair.

    Returns:
        ``(total, terms)``: ``total = sum_i weight_i * mse_i`` and ``terms`` with
        ``layer_{i}_loss`` (unweighted ``mse_i``, i = position in ``pairs``).
    """
    if len(pairs) == 0:
        raise ValueError("pairs is empty")
    terms: dict[str, Tensor] = {}
    total: Optional[Tensor] = None
    for index, (pred, target, weight) in enumerate(pairs):
        loss = layer_mse(pred, target, padding_mask)
        terms[f"layer_{index}_loss"] = loss
        total = loss * weight if total is None else total + loss * weight
    assert total is not None
    return total, terms


def fithubert_hint_pairs(
    student_heads: Sequence[Tensor],
    teacher_layers: Sequence[Tensor],
    hint_weight: float = 0.1,
    last_weight: float = 1.0,
) -> list[HintPair]:
    """FitHuBERT's pairs: head i with teacher layer i, every layer ``hint_weight`` but the last.

    Args:
        student_heads: N head outputs, each (B, T, D).
        teacher_layers: N teacher layer outputs (already mapped to the student's layers),
            each (B, T_t >= T, D).
    """
    if len(student_heads) != len(teacher_layers):
        raise ValueError(f"{len(student_heads)} student heads but {len(teacher_layers)} teacher layers: map them first")
    last = len(student_heads) - 1
    return [
        (pred, target, last_weight if index == last else hint_weight)
        for index, (pred, target) in enumerate(zip(student_heads, teacher_layers))
    ]


def fithubert_hint_loss(
    student_heads: Sequence[Tensor],
    teacher_layers: Sequence[Tensor],
    hint_weight: float = 0.1,
    last_weight: float = 1.0,
    padding_mask: Optional[Tensor] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`hint_loss` over :func:`fithubert_hint_pairs` (all N layers distilled)."""
    return hint_loss(fithubert_hint_pairs(student_heads, teacher_layers, hint_weight, last_weight), padding_mask)
