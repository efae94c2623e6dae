"""Checks on user waveforms: clear errors instead of silently wrong features."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from recycle_distill.util.sample_rate import SAMPLE_RATE


class WaveformError(ValueError):
    """A waveform the students cannot take; the message says which one and why."""


def validate_waveforms(waveforms: Sequence[Tensor], min_samples: int) -> None:
    """Raise :class:`WaveformError` unless every item is a finite 1-D float tensor of >= ``min_samples``.

    Args:
        waveforms: the list an S3PRL upstream receives, each (S,) at 16 kHz.
        min_samples: the CNN's receptive field (400 samples for the released models).
    """
    if isinstance(waveforms, Tensor) or not isinstance(waveforms, (list, tuple)):
        raise WaveformError(
            f"expected a list of 1-D waveforms, got {type(waveforms).__name__}"
            + (f" of shape {tuple(waveforms.shape)}" if isinstance(waveforms, Tensor) else "")
        )
    if len(waveforms) == 0:
        raise WaveformError("expected at least one waveform, got an empty list")
    for index, wave in enumerate(waveforms):
        where = f"waveform {index}"
        if not isinstance(wave, Tensor):
            raise WaveformError(f"{where}: expected a torch.Tensor, got {type(wave).__name__}")
        if not torch.is_floating_point(wave):
            raise WaveformError(f"{where}: expected a float tensor in [-1, 1], got dtype {wave.dtype}")
        if wave.dim() != 1:
            raise WaveformError(
                f"{where}: expected a 1-D mono waveform (S,), got shape {tuple(wave.shape)}; "
                f"mix or select a channel first"
            )
        if wave.numel() == 0:
            raise WaveformError(f"{where}: empty waveform")
        if wave.numel() < min_samples:
            raise WaveformError(
                f"{where}: {wave.numel()} samples is shorter than the CNN's receptive field "
                f"({min_samples} samples = {min_samples / SAMPLE_RATE * 1000:.0f} ms at {SAMPLE_RATE // 1000} kHz)"
            )
        if not bool(torch.isfinite(wave).all()):
            raise WaveformError(f"{where}: contains NaN or Inf values")
