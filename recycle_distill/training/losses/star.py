"""STaR (ICASSP 2024): distil temporal relations through temporal Gram matrices (TGMs).

A layer output F with N frames of d channels gives the N x N Gram ``G = F F^T`` (batch-first:
(B, T, D) -> (B, T, T)), whose size does not depend on d, so a narrow student can match a
wide teacher without projection heads. Two terms, equal weights, summed over layers l:

* layer-wise: ``||G_T^l - G_S^l||^2`` with ``G^l = F^l F^l^T``;
* intra-layer: the same with ``G^l = F^{l-1} F^l^T``, between the input and output of layer
  l (layer 1's input is the encoder input after the positional conv and LayerNorm).

The paper states no normalisation; ``normalization`` picks one:

* ``"none"``: the raw inner products above;
* ``"dim"`` (default): ``G / d``, the mean per-channel product. It keeps the magnitudes the
  paper's formula compares while removing the d factor between a 768-wide teacher and a
  432-wide student, whose raw Grams would differ by ~768/432 even for matching features;
* ``"cosine"``: inner products of L2-normalised frames (bounded in [-1, 1], scale-free).

Reduction: entries touching a padded frame are dropped (when a padding mask is given);
``"mean"`` (default) averages each utterance's squared differences over its valid N_b^2
entries, then over the batch, so the loss does not grow with utterance length;
``"sum"`` is the literal squared Frobenius norm summed over the batch.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from recycle_distill.training.losses.common import (
    check_layer_lists,
    cut_frames,
    cut_mask,
    loss_dtype,
    valid_frames,
)

__all__ = ["temporal_gram", "gram_distance", "star_loss", "STAR_NORMALIZATIONS", "STAR_REDUCTIONS"]

STAR_NORMALIZATIONS = ("none", "dim", "cosine")
STAR_REDUCTIONS = ("mean", "sum")
DEFAULT_NORMALIZATION = "dim"

LayerInputs = Union[Tensor, Sequence[Tensor], None]


def temporal_gram(left: Tensor, right: Optional[Tensor] = None, normalization: str = DEFAULT_NORMALIZATION) -> Tensor:
    """Temporal Gram matrix ``G[b, i, j] = <left[b, i], right[b, j]>`` (normalised).

    Args:
        left: (B, T, D) frames (the earlier layer for an intra-layer Gram).
        right: (B, T, D) frames, or None for ``left`` itself (a layer-wise Gram).
        normalization: ``"none"``, ``"dim"`` (divide by D) or ``"cosine"``.

    Returns:
        (B, T, T).
    """
    if normalization not in STAR_NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {STAR_NORMALIZATIONS}, got {normalization!r}")
    right = left if right is None else right
    if left.dim() != 3 or left.shape != right.shape:
        raise ValueError(
            f"expected two (B, T, D) tensors of one shape, got {tuple(left.shape)} and {tuple(right.shape)}"
        )
    if normalization == "cosine":
        # eps keeps all-zero (padded) frames finite; their entries are excluded later anyway.
        left, right = F.normalize(left, dim=-1, eps=1e-8), F.normalize(right, dim=-1, eps=1e-8)
    gram = torch.bmm(left, right.transpose(1, 2))
    return gram / left.shape[-1] if normalization == "dim" else gram


def gram_distance(student: Tensor, teacher: Tensor, valid: Tensor, reduction: str = "mean") -> Tensor:
    """Squared distance of two (B, T, T) Grams over the entries whose frames are both valid.

    Args:
        student, teacher: (B, T, T).
        valid: (B, T) bool, True = a frame that counts.
        reduction: ``"mean"`` (per-utterance mean over valid entries, then batch mean) or
            ``"sum"`` (sum over valid entries and the batch).
    """
    if reduction not in STAR_REDUCTIONS:
        raise ValueError(f"reduction must be one of {STAR_REDUCTIONS}, got {reduction!r}")
    pairs = valid.unsqueeze(2) & valid.unsqueeze(1)
    # where, not multiply: non-finite values on padded frames must not leak in.
    squared = torch.where(pairs, (student - teacher).square(), student.new_zeros(()))
    per_utterance = squared.sum(dim=(1, 2))
    if reduction == "sum":
        return per_utterance.sum()
    return (per_utterance / pairs.sum(dim=(1, 2)).clamp_min(1).to(per_utterance.dtype)).mean()


def _layer_inputs(inputs: LayerInputs, layers: Sequence[Tensor], name: str) -> list[Tensor]:
    """Per-layer inputs: a tensor is the encoder input, followed by layers[:-1]; a list is used as is."""
    if inputs is None:
        raise ValueError(f"{name} is required for the intra-layer term (pass intra_weight=0 to skip it)")
    if isinstance(inputs, Tensor):
        return [inputs, *layers[:-1]]
    if len(inputs) != len(layers):
        raise ValueError(f"{name} has {len(inputs)} entries, expected one per layer ({len(layers)})")
    return list(inputs)


def star_loss(
    student_layers: Sequence[Tensor],
    teacher_layers: Sequence[Tensor],
    student_inputs: LayerInputs = None,
    teacher_inputs: LayerInputs = None,
    padding_mask: Optional[Tensor] = None,
    normalization: str = DEFAULT_NORMALIZATION,
    layerwise_weight: float = 1.0,
    intra_weight: float = 1.0,
    reduction: str = "mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """STaR's temporal-relation loss: layer-wise plus intra-layer TGM distances, summed over layers.

    Args:
        student_layers: N student layer outputs (no heads), each (B, T, d_s).
        teacher_layers: N teacher layer outputs mapped to the student's layers, each
            (B, T_t >= T, d_t); cut to their first T frames.
        student_inputs: the student's layer inputs for the intra-layer term: the (B, T, d_s)
            encoder input after positional conv + LayerNorm (the inputs are then it and
            ``student_layers[:-1]``), or a list of N (B, T, d_s) inputs.
        teacher_inputs: the same for the teacher. With a tensor, layer l's input is mapped
            teacher entry l-1, which is right for a one-to-one layer map; otherwise pass the
            list of each mapped teacher layer's own input.
        padding_mask: None (every frame counts) or (B, T_p >= T) bool, True = pad: entries
            of every Gram that touch a padded frame are dropped.
        normalization: ``"none"``, ``"dim"`` (default) or ``"cosine"`` (see module doc).
        layerwise_weight, intra_weight: weights of the two terms (1.0 each in the paper);
            with ``intra_weight=0`` the inputs may be None and that term is not computed.
        reduction: ``"mean"`` (default) or ``"sum"`` (see :func:`gram_distance`).

    Returns:
        ``(total, terms)``: ``terms`` holds ``layerwise_loss`` and ``intra_layer_loss``
        (unweighted sums over layers); ``total`` is their weighted sum.
    """
    num_layers, batch, num_frames = check_layer_lists(student_layers)
    if len(teacher_layers) != num_layers:
        raise ValueError(
            f"teacher_layers has {len(teacher_layers)} entries, student_layers {num_layers}: map them first"
        )
    teachers = [cut_frames(t, num_frames, f"teacher_layers[{i}]") for i, t in enumerate(teacher_layers)]
    for index, teacher in enumerate(teachers):
        if teacher.dim() != 3 or teacher.shape[0] != batch:
            raise ValueError(
                f"teacher_layers[{index}] has shape {tuple(teacher_layers[index].shape)}, expected (B, T, D)"
            )
    device = student_layers[0].device
    valid = valid_frames(cut_mask(padding_mask, batch, num_frames, "padding_mask"), batch, num_frames, device)
    dtype = loss_dtype(*student_layers, *teachers)
    students = [s.to(dtype) for s in student_layers]
    teachers = [t.to(dtype) for t in teachers]

    layerwise = students[0].new_zeros(())
    for student, teacher in zip(students, teachers):
        layerwise = layerwise + gram_distance(
            temporal_gram(student, normalization=normalization),
            temporal_gram(teacher, normalization=normalization),
            valid,
            reduction,
        )

    intra = students[0].new_zeros(())
    if intra_weight != 0:
        s_inputs = [s.to(dtype) for s in _layer_inputs(student_inputs, student_layers, "student_inputs")]
        t_inputs = [
            cut_frames(t, num_frames, f"teacher_inputs[{i}]").to(dtype)
            for i, t in enumerate(_layer_inputs(teacher_inputs, teacher_layers, "teacher_inputs"))
        ]
        for s_in, s_out, t_in, t_out in zip(s_inputs, students, t_inputs, teachers):
            intra = intra + gram_distance(
                temporal_gram(s_in, s_out, normalization),
                temporal_gram(t_in, t_out, normalization),
                valid,
                reduction,
            )

    terms = {"layerwise_loss": layerwise, "intra_layer_loss": intra}
    return layerwise_weight * layerwise + intra_weight * intra, terms
