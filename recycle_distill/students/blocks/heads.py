"""Layer-wise projection heads and FitHuBERT's time-axis resampling blocks."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn


class TimeUpsampler(nn.Module):
    """ConvTranspose1d(E, E, k=factor, stride=factor) over time, cut or edge-padded to a length.

    Args:
        embed_dim: E.
        factor: upsampling factor (2 in FitHuBERT).
    """

    def __init__(self, embed_dim: int, factor: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(embed_dim, embed_dim, kernel_size=factor, stride=factor)

    def forward(self, x: Tensor, length: int) -> Tensor:
        """(B, T', E) -> (B, length, E); a missing last frame repeats the previous one."""
        y = self.conv(x.transpose(1, 2))
        # No "if shorter" branch: padding by 0 frames is the identity (and a negative amount
        # crops), so one path serves every length, which keeps a traced ONNX export general.
        y = F.pad(y, (0, length - y.shape[-1]), mode="replicate")
        return y[:, :, :length].transpose(1, 2)


class TimeReduction(nn.Module):
    """FitHuBERT's Conv1d(E, E, k, stride=factor) that shortens the sequence before layer 1.

    Args:
        embed_dim: E. kernel_size: k. factor: stride.
    """

    def __init__(self, embed_dim: int, kernel_size: int, factor: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.factor = factor
        self.conv = nn.Conv1d(embed_dim, embed_dim, kernel_size=kernel_size, stride=factor)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, E) -> (B, floor((T - k) / factor + 1), E)."""
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class ProjectionHead(nn.Module):
    """Per-layer prediction head: optional time upsampler, then Linear(E, D) unless E == D.

    Args:
        embed_dim: E. output_dim: D (768 for HuBERT Base targets).
        upsample_factor: when set, a :class:`TimeUpsampler` runs first (FitHuBERT).
    """

    def __init__(self, embed_dim: int, output_dim: int, upsample_factor: Optional[int] = None) -> None:
        super().__init__()
        self.upsample = TimeUpsampler(embed_dim, upsample_factor) if upsample_factor else None
        self.lin_proj = nn.Linear(embed_dim, output_dim) if embed_dim != output_dim else None

    def forward(self, x: Tensor, length: Optional[int] = None) -> Tensor:
        """(B, T, E) -> (B, T, D); with an upsampler, (B, T', E) -> (B, length, D)."""
        if self.upsample is not None:
            x = self.upsample(x, length if length is not None else x.shape[1] * self.upsample.conv.stride[0])
        return self.lin_proj(x) if self.lin_proj is not None else x
