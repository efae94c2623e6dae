"""The masking trainers' validation loss (``v_loss``): plain MSE, no masking.

Layers are the hint layers plus the last; each layer's MSE is a mean over (B, T, D); hint
layers are weighted ``hint_weight`` (0.1) and the last ``last_weight`` (1.0); the weighted
layer losses are summed. This is the original trainer's ``calculate_loss_without_mask``.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor

from recycle_distill.training.losses.common import check_hint_layers, check_layer_lists
from recycle_distill.training.losses.hints import hint_loss

__all__ = ["validation_loss"]


def validation_loss(
    student_layers: Sequence[Tensor],
    teacher_layers: Sequence[Tensor],
    hint_layers: Sequence[int],
    hint_weight: float = 0.1,
    last_weight: float = 1.0,
    padding_mask: Optional[Tensor] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Validation loss of masking distillation.

    Args:
        student_layers: N student predictions (head outputs), each (B, T, D).
        teacher_layers: N teacher layer outputs on the unmasked input, mapped to the
            student's layers, each (B, T_t >= T, D); cut to their first T frames.
        hint_layers: 0-based hint indices, never the last entry (see
            :func:`~recycle_distill.training.losses.masked_frames.masking_distillation_loss`).
        hint_weight: weight of each hint layer's MSE.
        last_weight: weight of the last layer's MSE.
        padding_mask: None (the reference: every frame counts) or a (B, T) bool padding
            mask (True = pad) whose frames are dropped from every mean.

    Returns:
        ``(total, terms)`` with ``hint_loss`` (weighted sum over hint layers) and ``rec_loss``
        (weighted last-layer MSE); ``total = hint_loss + rec_loss``.
    """
    num_layers, _, _ = check_layer_lists(student_layers, teacher_layers=teacher_layers)
    hints = check_hint_layers(hint_layers, num_layers)
    last = num_layers - 1
    rec, _ = hint_loss([(student_layers[last], teacher_layers[last], last_weight)], padding_mask)
    terms = {"rec_loss": rec}
    if hints:
        pairs = [(student_layers[index], teacher_layers[index], hint_weight) for index in hints]
        terms["hint_loss"], _ = hint_loss(pairs, padding_mask)
    else:
        terms["hint_loss"] = rec.new_zeros(())
    return terms["hint_loss"] + terms["rec_loss"], terms
