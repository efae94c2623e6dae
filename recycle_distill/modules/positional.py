"""Convolutional relative positional embedding with a weight-normalised grouped conv."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``weight_g * weight_v / ||weight_v||``, the norm over dims 0 and 1.

    Parameters are stored as ``weight_g`` (1, 1, K) and ``weight_v`` (out, in/groups, K),
    the names ``torch.nn.utils.weight_norm(conv, dim=2)`` gives, without its hook machinery.

    Without autograd the normalised weight is cached and reused until a parameter changes
    (in-place updates bump ``_version``; ``.to()``/``load_state_dict`` change the storage or
    the version), and on CPU the conv runs as an NHWC ``conv2d`` on the (B, T, C) memory
    the encoder already holds: oneDNN's channels-last grouped kernel is ~1.5x faster than
    the channels-first ``conv1d`` one here.
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
        self._cache_key: Optional[tuple] = None
        self._cached_weight: Optional[Tensor] = None

    def weight(self) -> Tensor:
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)
        return self.weight_v * (self.weight_g / norm)

    def _inference_weight(self, channels_last: bool) -> Tensor:
        """The normalised weight, (out, in/groups, 1, K) channels-last when asked, cached."""
        key = tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in (self.weight_g, self.weight_v)) + (channels_last,)
        if key != self._cache_key or self._cached_weight is None:
            # Normal tensors even inside inference_mode, so later no_grad calls may use them.
            with torch.inference_mode(False), torch.no_grad():
                weight = self.weight()
                if channels_last:
                    weight = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            self._cache_key, self._cached_weight = key, weight
        return self._cached_weight

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T + 1 - K % 2); in CPU inference a view of (B, T, C) memory."""
        if torch.is_grad_enabled():
            return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)
        channels_last = x.device.type == "cpu"
        weight = self._inference_weight(channels_last)
        if channels_last:
            out = F.conv2d(x.unsqueeze(2), weight, self.bias, padding=(0, self.padding), groups=self.groups)
            return out.squeeze(2)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class ConvPositionalEmbedding(nn.Module):
    """``x + GELU(conv(x))`` over time, with "same" length output.

    The released checkpoints call the convolution ``pos_conv.0``;
    :mod:`recycle_distill.models.key_layout` maps the name.

    Args:
        embed_dim: E.
        kernel_size: K (128 in every released model; even, so one frame is dropped).
        groups: convolution groups.
    """

    def __init__(self, embed_dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.conv = WeightNormConv1d(embed_dim, kernel_size, groups)
        self.drop_last = kernel_size % 2 == 0

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, E) -> (B, T, E)."""
        y = self.conv(x.transpose(1, 2))
        if self.drop_last:
            y = y[:, :, :-1]
        return x + F.gelu(y).transpose(1, 2)
