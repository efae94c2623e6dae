"""Gradient scaling that leaves the forward pass untouched."""

from __future__ import annotations

import torch
from torch import Tensor


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad * ctx.scale, None


def grad_multiply(x: Tensor, scale: float) -> Tensor:
    """Identity forward; multiplies the incoming gradient by ``scale``."""
    if scale == 1.0:
        return x
    return _GradMultiply.apply(x, scale)


def layer_grad_scales(num_layers: int) -> list[float]:
    """Per-layer stream factor ``m_i = (N - i) / (N - i + 1)`` (0-based ``i``).

    The stream continues as ``grad_multiply(x_i, m_i)`` and the layer's exported result is
    ``grad_multiply(stream, 1 - m_i)``, so each layer's loss gradient is damped relative to
    what flows on to deeper layers.
    """
    return [(num_layers - i) / (num_layers - i + 1) for i in range(num_layers)]
