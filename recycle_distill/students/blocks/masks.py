"""Padding masks built from lengths (True = padding), the one convention used everywhere."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


def lengths_to_padding_mask(lengths: Tensor, max_length: int) -> Tensor:
    """Boolean mask (B, T), True where ``t >= lengths[b]``.

    Args:
        lengths: (B,) integer lengths.
        max_length: T, the padded length.
    """
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)


def conv_output_lengths(lengths: Tensor, layers: Sequence[tuple[int, int]]) -> Tensor:
    """Frame counts after a stack of unpadded convolutions.

    Each layer maps ``L -> floor((L - kernel) / stride + 1)``; lengths below one kernel
    become 0 (never negative).

    Args:
        lengths: (B,) sample (or frame) counts.
        layers: (kernel, stride) per convolution.
    """
    lengths = lengths.to(torch.long)
    for kernel, stride in layers:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        lengths = lengths.clamp(min=0)
    return lengths


def pad_waveforms(waveforms: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Right zero-pad 1-D waveforms into a batch.

    Returns:
        (B, S) padded batch and (B,) lengths.
    """
    lengths = torch.tensor([int(w.shape[0]) for w in waveforms], device=waveforms[0].device)
    batch = waveforms[0].new_zeros(len(waveforms), int(lengths.max()))
    for index, wave in enumerate(waveforms):
        batch[index, : wave.shape[0]] = wave
    return batch, lengths


def optional_mask(mask: Tensor, keep_all_false: bool) -> Optional[Tensor]:
    """``mask`` unless it marks nothing and the caller wants ``None`` for "no padding"."""
    if keep_all_false or bool(mask.any()):
        return mask
    return None
