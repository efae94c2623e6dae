"""Convolutional relative positional embedding with a weight-normalised grouped conv."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recycle_distill.students.blocks.table import PLAIN, BlockTable


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``weight_g * weight_v / ||weight_v||``, the norm over dims 0 and 1.

    Parameters are stored as ``weight_g`` (1, 1, K) and ``weight_v`` (out, in/groups, K),
    the names ``torch.nn.utils.weight_norm(conv, dim=2)`` gives, without its hook machinery.

    :mod:`recycle_distill.inference.blocks.positional` folds it once for inference.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.groups = groups
        std = math.sqrt(4.0 / (kernel_size * channels))
        weight_v = torch.empty(channels, channels // groups, kernel_size).normal_(0.0, std)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_g = nn.Parameter(weight_v.norm(dim=(0, 1), keepdim=True))
        self.weight_v = nn.Parameter(weight_v)

    def weight(self) -> Tensor:
        """(out, in/groups, K) normalised weight."""
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T + 1 - K % 2)."""
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class ConvPositionalEmbedding(nn.Module):
    """``x + GELU(conv(x))`` over time, with "same" length output.

    The released checkpoints call the convolution ``pos_conv.0``;
    :mod:`recycle_distill.students.key_layout` maps the name.

    Args:
        embed_dim: E.
        kernel_size: K (128 in every released model; even, so one frame is dropped).
        groups: convolution groups.
        blocks: the block table (:mod:`recycle_distill.students.blocks.table`).
    """

    def __init__(self, embed_dim: int, kernel_size: int, groups: int, blocks: BlockTable = PLAIN) -> None:
        super().__init__()
        self.conv = blocks.get(WeightNormConv1d, WeightNormConv1d)(embed_dim, kernel_size, groups)
        self.drop_last = kernel_size % 2 == 0

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, E) -> (B, T, E)."""
        y = self.conv(x.transpose(1, 2))
        if self.drop_last:
            y = y[:, :, :-1]
        return x + F.gelu(y).transpose(1, 2)
