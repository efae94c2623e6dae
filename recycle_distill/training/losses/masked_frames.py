"""Masking distillation (MaskHuBERT, ARMHuBERT): masked frames chase the unmasked teacher.

The teacher runs twice on a batch, once with its span masking and once without; the student
sees the same mask indices (filled with its own ``mask_emb``). For every distilled layer:

* per-frame error ``e[b, t] = mean_d (pred - target)^2``;
* masked frames take the UNMASKED teacher as target, unmasked frames the MASKED teacher;
* the four sums (masked / unmasked x hint layers / last layer) are each divided by the
  number of counted frames: all B*T padded frames in the reference mode, the valid frames
  when padding is excluded (never by the size of the frame set, nor by the layer count);
* ``hint_loss = hint_weight * (mask_hint + unmask_hint)``,
  ``rec_loss = last_weight * (mask_rec + unmask_rec)``, ``total = hint_loss + rec_loss``.

This is the original trainer's ``calculate_loss`` (verified against its recorded numbers and
gradients in ``tests/training/test_losses.py``).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from recycle_distill.training.losses.common import (
    check_hint_layers,
    check_layer_lists,
    cut_frames,
    cut_mask,
    loss_dtype,
    valid_frames,
)

__all__ = ["masking_distillation_loss", "MASKING_TERMS"]

MASKING_TERMS = (
    "mask_hint_loss",
    "unmask_hint_loss",
    "mask_rec_loss",
    "unmask_rec_loss",
    "hint_loss",
    "rec_loss",
)


def _frame_errors(pred: Tensor, unmasked: Tensor, masked: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, T, D) x3, (B, T) mask -> (B, T) per-frame mean squared error against the crossed target."""
    target = torch.where(mask.unsqueeze(-1), unmasked.to(dtype), masked.to(dtype))
    return (pred.to(dtype) - target).square().mean(dim=-1)


def masking_distillation_loss(
    student_layers: Sequence[Tensor],
    teacher_unmasked_layers: Sequence[Tensor],
    teacher_masked_layers: Sequence[Tensor],
    mask_indices: Tensor,
    hint_layers: Sequence[int],
    hint_weight: float = 0.1,
    last_weight: float = 1.0,
    padding_mask: Optional[Tensor] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The masking distillation loss of MaskHuBERT / ARMHuBERT.

    Args:
        student_layers: N student predictions (the projection-head outputs), each (B, T, D).
        teacher_unmasked_layers: N teacher layer outputs on the unmasked input, each
            (B, T_t >= T, D), already mapped to the student's layers (entry i pairs with
            student entry i); cut to the first T frames.
        teacher_masked_layers: the same for the teacher run on the masked input.
        mask_indices: (B, T_t >= T) bool, True = masked frame (the teacher's mask, on the
            teacher's frame grid); cut to the first T frames.
        hint_layers: 0-based indices of the hint layers into the lists above; the last entry
            (index N-1) is always the reconstruction layer and may not appear here.
        hint_weight: weight of the hint sums (0.1 in every released recipe).
        last_weight: weight of the last-layer sums (``rec_loss_weight``, 1.0).
        padding_mask: None reproduces the reference (padded frames count, every sum is
            divided by B*T); a (B, T_p >= T) bool padding mask (True = pad, the student's frame
            grid) drops padded frames and divides by the number of valid frames instead.

    Returns:
        ``(total, terms)``: the scalar loss and a dict with ``mask_hint_loss``,
        ``unmask_hint_loss``, ``mask_rec_loss``, ``unmask_rec_loss`` (unweighted),
        ``hint_loss`` and ``rec_loss`` (weighted), all scalar tensors still in the graph.
        Reduced in float32 at least (see :func:`~recycle_distill.training.losses.common.loss_dtype`).
    """
    num_layers, batch, num_frames = check_layer_lists(
        student_layers,
        teacher_unmasked_layers=teacher_unmasked_layers,
        teacher_masked_layers=teacher_masked_layers,
    )
    hints = check_hint_layers(hint_layers, num_layers)
    if mask_indices is None:
        raise ValueError("mask_indices is required; without masking use validation_loss")
    device = student_layers[0].device
    mask = cut_mask(mask_indices, batch, num_frames, "mask_indices").to(device)
    padding = cut_mask(padding_mask, batch, num_frames, "padding_mask")
    valid = valid_frames(padding, batch, num_frames, device)
    masked_frames = mask & valid
    unmasked_frames = ~mask & valid
    dtype = loss_dtype(*student_layers, *teacher_unmasked_layers, *teacher_masked_layers)
    if padding is None:
        count: Union[Tensor, int] = batch * num_frames
    else:
        # No host sync: an all-padding batch gives a zero loss instead of a division by zero.
        count = valid.sum().clamp_min(1).to(dtype)

    def layer_sums(index: int) -> tuple[Tensor, Tensor]:
        errors = _frame_errors(
            student_layers[index],
            cut_frames(teacher_unmasked_layers[index], num_frames, f"teacher_unmasked_layers[{index}]"),
            cut_frames(teacher_masked_layers[index], num_frames, f"teacher_masked_layers[{index}]"),
            mask,
            dtype,
        )
        # where, not multiply: a non-finite error on an excluded frame must not leak in.
        zero = errors.new_zeros(())
        return torch.where(masked_frames, errors, zero).sum(), torch.where(unmasked_frames, errors, zero).sum()

    mask_hint = unmask_hint = student_layers[0].new_zeros((), dtype=dtype)
    for index in hints:
        masked_sum, unmasked_sum = layer_sums(index)
        mask_hint = mask_hint + masked_sum
        unmask_hint = unmask_hint + unmasked_sum
    mask_rec, unmask_rec = layer_sums(num_layers - 1)

    terms = {
        "mask_hint_loss": mask_hint / count,
        "unmask_hint_loss": unmask_hint / count,
        "mask_rec_loss": mask_rec / count,
        "unmask_rec_loss": unmask_rec / count,
    }
    terms["hint_loss"] = (terms["mask_hint_loss"] + terms["unmask_hint_loss"]) * hint_weight
    terms["rec_loss"] = (terms["mask_rec_loss"] + terms["unmask_rec_loss"]) * last_weight
    return terms["hint_loss"] + terms["rec_loss"], terms
