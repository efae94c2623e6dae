"""The convolutional waveform encoder (wav2vec 2.0 "default" mode)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (fp16/bf16 safe)."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.type_as(x)


class ConvFeatureExtractor(nn.Module):
    """Stack of 1-D convolutions turning a waveform into frames.

    Block ``i`` is ``Conv1d(no bias) -> Dropout -> [GroupNorm(dim, dim) on block 0] -> GELU``;
    the Sequential indices (0 conv, 2 norm) keep the reference state-dict names.

    Args:
        layers: (dim, kernel, stride) per block.
        conv_bias: whether the convolutions have a bias.
    """

    def __init__(self, layers: Sequence[tuple[int, int, int]], conv_bias: bool = False) -> None:
        super().__init__()
        blocks = []
        in_channels = 1
        for index, (dim, kernel, stride) in enumerate(layers):
            parts: list[nn.Module] = [nn.Conv1d(in_channels, dim, kernel, stride=stride, bias=conv_bias), nn.Dropout(0.0)]
            if index == 0:
                parts.append(Fp32GroupNorm(dim, dim, affine=True))
            parts.append(nn.GELU())
            blocks.append(nn.Sequential(*parts))
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
