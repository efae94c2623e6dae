"""The convolutional waveform encoder (wav2vec 2.0 "default" mode)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# glibc's largest dynamic mmap threshold: bigger allocations are fresh mappings every time,
# paid for in page faults (up to ~40% of a batched 10 s CPU forward here), so bigger
# batched activations are worth splitting per utterance when nothing needs them together.
LARGE_TENSOR_BYTES = 32 * 2**20


class Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (fp16/bf16 safe)."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.type_as(x)


class ConvBlock(nn.Module):
    """``Conv1d -> [GroupNorm(dim, dim)] -> GELU`` over (B, C, T).

    The released checkpoints number these parts (``0`` conv, ``2`` norm);
    :mod:`recycle_distill.models.key_layout` maps the names.
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


def block_parts(block: nn.Module) -> list[nn.Module]:
    """A CNN block's modules in order: ours (:class:`ConvBlock`) or an S3PRL ``Sequential``."""
    return block.parts() if isinstance(block, ConvBlock) else list(block)


class ConvFeatureExtractor(nn.Module):
    """Stack of 1-D convolutions turning a waveform into frames.

    Block ``i`` is ``Conv1d(no bias) -> [GroupNorm(dim, dim) on block 0] -> GELU``
    (:class:`ConvBlock`; the reference's dropout in each block has p = 0 and is left out).

    CPU inference (no autograd) runs the blocks as oneDNN convolutions on (B, C, 1, T)
    tensors in channels-last memory (time-major, channels innermost): 1.3-2x faster per
    block here than the channels-first ``conv1d`` path, and the result is already laid
    out as the (B, T, C) frames the encoder wants. GELU then runs in place, and a batch
    whose largest activation exceeds :data:`LARGE_TENSOR_BYTES` runs one utterance at a
    time: rows are independent (GroupNorm normalises per utterance), and one utterance's
    working set stays in cache and in reused heap memory instead of fresh mappings that
    page-fault on every forward. Training and other devices run the blocks as built.

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
        """(B, S) waveforms -> (B, C, T) features (in CPU inference a view of (B, T, C) memory)."""
        return run_conv_blocks(self.conv_layers, waveforms)


def run_conv_blocks(conv_layers: nn.ModuleList, waveforms: Tensor) -> Tensor:
    """Run wav2vec 2.0-style CNN blocks on (B, S) waveforms -> (B, C, T).

    ``conv_layers`` are ``Conv1d -> [Dropout] -> [GroupNorm] -> GELU`` blocks: ours
    (:class:`ConvBlock`), or an S3PRL teacher's ``feature_extractor.conv_layers`` (``Sequential``). CPU inference takes the
    channels-last path described in :class:`ConvFeatureExtractor`; anything else (autograd,
    GPUs, blocks with other modules such as the "layer_norm" extractor mode) runs the blocks
    as built.
    """
    fast = waveforms.device.type == "cpu" and not torch.is_grad_enabled() and all(
        isinstance(module, _FAST_MODULES) for block in conv_layers for module in block_parts(block)
    )
    if not fast:
        x = waveforms.unsqueeze(1)
        for block in conv_layers:
            x = block(x)
        return x
    if waveforms.shape[0] * _largest_activation(conv_layers, waveforms) <= LARGE_TENSOR_BYTES:
        return _forward_channels_last(conv_layers, waveforms)
    first = _forward_channels_last(conv_layers, waveforms[:1])
    out = first.new_empty(waveforms.shape[0], first.shape[2], first.shape[1])  # (B, T, C)
    out[0] = first[0].transpose(0, 1)
    for index in range(1, waveforms.shape[0]):
        out[index] = _forward_channels_last(conv_layers, waveforms[index : index + 1])[0].transpose(0, 1)
    return out.transpose(1, 2)


_FAST_MODULES = (nn.Conv1d, nn.Dropout, nn.GroupNorm, nn.GELU)


def _largest_activation(conv_layers: nn.ModuleList, waveforms: Tensor) -> int:
    """Bytes of the largest per-utterance block output for (B, S) ``waveforms``."""
    length, largest = waveforms.shape[1], 0
    for block in conv_layers:
        conv = block_parts(block)[0]
        length = (length - conv.kernel_size[0]) // conv.stride[0] + 1
        largest = max(largest, conv.out_channels * length)
    return largest * waveforms.element_size()


def _forward_channels_last(conv_layers: nn.ModuleList, waveforms: Tensor) -> Tensor:
    """(B, S) -> (B, C, T) with (B, T, C) memory, through NHWC convolutions (no autograd)."""
    # (B, 1, 1, S) with explicit channels-last strides: with one channel both layouts are
    # the same memory, and the strides decide which one the convolutions produce.
    x = torch.empty((waveforms.shape[0], 1, 1, waveforms.shape[1]), dtype=waveforms.dtype,
                    device=waveforms.device, memory_format=torch.channels_last)
    x.copy_(waveforms[:, None, None, :])
    for block in conv_layers:
        for module in block_parts(block):
            if isinstance(module, nn.Conv1d):
                x = _conv_channels_last(x, module)
            elif isinstance(module, nn.GELU):
                x = torch.ops.aten.gelu_(x)
            else:
                x = module(x)  # Dropout and GroupNorm keep the channels-last layout
    return x.squeeze(2)


def _conv_channels_last(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """``conv`` on (B, C, 1, T) channels-last ``x`` -> (B, C', 1, T') channels-last (no autograd).

    fp32 goes straight to oneDNN's convolution: ``F.conv2d`` sends 1x1 convolutions to a
    slow im2col path when torch runs single-threaded, and oneDNN's NHWC kernels beat a
    plain matmul on the (B*T, C) rows for every block here.
    """
    weight = _channels_last_weight(conv)
    stride = [1, conv.stride[0]]
    if x.dtype == weight.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return torch.ops.aten.mkldnn_convolution(x, weight, conv.bias, [0, 0], stride, [1, 1], 1)
    return F.conv2d(x, weight, conv.bias, stride=stride)


def _channels_last_weight(conv: nn.Conv1d) -> Tensor:
    """conv.weight as (C', C, 1, K) channels-last, cached on the module while it is unchanged.

    The re-layout is a strided gather (~1 ms for a 256x256x3 kernel); in-place updates bump
    the parameter's ``_version`` and ``.to()``/``load_state_dict`` change its storage or
    version, either of which rebuilds the copy.
    """
    weight = conv.weight
    key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
    cached = getattr(conv, "_channels_last_cache", None)
    if cached is None or cached[0] != key:
        # A normal tensor even under inference_mode, so later no_grad calls may use it too.
        with torch.inference_mode(False), torch.no_grad():
            cached = (key, weight.unsqueeze(2).contiguous(memory_format=torch.channels_last))
        conv._channels_last_cache = cached  # a plain attribute: not in the state dict
    return cached[1]


def _receptive_field(kernel_strides: Sequence[tuple[int, int]]) -> int:
    """Samples needed for one output frame."""
    field, jump = 1, 1
    for kernel, stride in kernel_strides:
        field += (kernel - 1) * jump
        jump *= stride
    return field
