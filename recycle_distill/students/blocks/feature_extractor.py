"""The convolutional waveform encoder (wav2vec 2.0 "default" mode)."""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (fp16/bf16 safe)."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.type_as(x)


class ConvBlock(nn.Module):
    """``Conv1d -> [GroupNorm(dim, dim)] -> GELU`` over (B, C, T).

    The released checkpoints number these parts (``0`` conv, ``2`` norm);
    :mod:`recycle_distill.students.key_layout` maps the names.
    """

    def __init__(self, in_channels: int, dim: int, kernel: int, stride: int, conv_bias: bool, norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, dim, kernel, stride=stride, bias=conv_bias)
        self.norm = Fp32GroupNorm(dim, dim, affine=True) if norm else None
        self.activation = nn.GELU()

    def parts(self) -> list[nn.Module]:
        """The modules in the order they run."""
        return [m for m in (self.conv, self.norm, self.activation) if m is not None]

    def forward(self, x: Tensor) -> Tensor:
        for module in self.parts():
            x = module(x)
        return x


class ConvFeatureExtractor(nn.Module):
    """Stack of 1-D convolutions turning a waveform into frames.

    Block ``i`` is ``Conv1d(no bias) -> [GroupNorm(dim, dim) on block 0] -> GELU``
    (:class:`ConvBlock`; the reference's dropout in each block has p = 0 and is left out).

    :mod:`recycle_distill.inference.blocks.cnn` has a faster CPU inference runner.

    Args:
        layers: (dim, kernel, stride) per block.
        conv_bias: whether the convolutions have a bias.
    """

    def __init__(self, layers: Sequence[tuple[int, int, int]], conv_bias: bool = False) -> None:
        super().__init__()
        blocks = []
        in_channels = 1
        for index, (dim, kernel, stride) in enumerate(layers):
            blocks.append(ConvBlock(in_channels, dim, kernel, stride, conv_bias, norm=index == 0))
            in_channels = dim
        self.conv_layers = nn.ModuleList(blocks)
        self.kernel_strides = [(kernel, stride) for _, kernel, stride in layers]
        self.receptive_field = _receptive_field(self.kernel_strides)

    def forward(self, waveforms: Tensor) -> Tensor:
        """(B, S) waveforms -> (B, C, T) features."""
        x = waveforms.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x


def _receptive_field(kernel_strides: Sequence[tuple[int, int]]) -> int:
    """Samples needed for one output frame."""
    field, jump = 1, 1
    for kernel, stride in kernel_strides:
        field += (kernel - 1) * jump
        jump *= stride
    return field
