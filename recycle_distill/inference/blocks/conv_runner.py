"""The CPU inference runner of wav2vec 2.0-style CNN front ends (students and teachers).

It knows no student module (blocks are duck-typed), so the teacher imports it alone.

Without autograd on CPU the blocks run as oneDNN convolutions on (B, C, 1, T) tensors in
channels-last memory (time-major, channels innermost): 1.3-2x faster per block here than
the channels-first ``conv1d`` path, and the result is already laid out as the (B, T, C)
frames the encoder wants. GELU then runs in place, and a batch whose largest activation
exceeds :data:`LARGE_TENSOR_BYTES` runs one utterance at a time: rows are independent
(GroupNorm normalises per utterance), and one utterance's working set stays in cache and
in reused heap memory instead of fresh mappings that page-fault on every forward. An
utterance whose largest activation passes ``conv_chunks.TIME_CHUNKS_FROM_BYTES`` runs in time
chunks with the same result (:mod:`.conv_chunks`), so long recordings need no full-rate
activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recycle_distill.inference.blocks import conv_chunks
from recycle_distill.inference.blocks.derived import derived_tensor, fast_path_applies

# glibc's largest dynamic mmap threshold: bigger allocations are fresh mappings every time,
# paid for in page faults (up to ~40% of a batched 10 s CPU forward here), so bigger
# batched activations are worth splitting per utterance when nothing needs them together.
LARGE_TENSOR_BYTES = 32 * 2**20

_FAST_MODULES = (nn.Conv1d, nn.Dropout, nn.GroupNorm, nn.GELU)


def block_parts(block: nn.Module) -> list[nn.Module]:
    """A CNN block's modules in order: ours (``ConvBlock.parts()``) or an S3PRL ``Sequential``."""
    parts = getattr(block, "parts", None)
    return parts() if callable(parts) else list(block)


def run_conv_blocks(conv_layers: nn.ModuleList, waveforms: Tensor) -> Tensor:
    """Run wav2vec 2.0-style CNN blocks on (B, S) waveforms -> (B, C, T).

    ``conv_layers`` are ``Conv1d -> [Dropout] -> [GroupNorm] -> GELU`` blocks: ours
    (``ConvBlock``) or an S3PRL teacher's ``feature_extractor.conv_layers``
    (``Sequential``). CPU inference takes the channels-last path (module docstring);
    anything else (autograd, GPUs, blocks with other modules such as the "layer_norm"
    extractor mode) runs the blocks as built.
    """
    fast = fast_path_applies(waveforms) and all(
        isinstance(module, _FAST_MODULES) for block in conv_layers for module in block_parts(block)
    )
    if not fast:
        x = waveforms.unsqueeze(1)
        for block in conv_layers:
            x = block(x)
        return x
    largest = _largest_activation(conv_layers, waveforms)
    if waveforms.shape[0] * largest <= LARGE_TENSOR_BYTES:
        return _forward_channels_last(conv_layers, waveforms)
    parts = [block_parts(block) for block in conv_layers]
    if largest > conv_chunks.TIME_CHUNKS_FROM_BYTES and conv_chunks.chunkable(parts):
        def one(index: int) -> Tensor:  # (1, T, C)
            return conv_chunks.run_in_time_chunks(parts, waveforms[index : index + 1], _run_block, _channels_last_input)
    else:
        def one(index: int) -> Tensor:  # (1, T, C)
            return _forward_channels_last(conv_layers, waveforms[index : index + 1]).transpose(1, 2)
    first = one(0)
    out = first.new_empty(waveforms.shape[0], first.shape[1], first.shape[2])  # (B, T, C)
    out[0] = first[0]
    for index in range(1, waveforms.shape[0]):
        out[index] = one(index)[0]
    return out.transpose(1, 2)


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
    x = _channels_last_input(waveforms)
    for block in conv_layers:
        x = _run_block(x, block_parts(block), {})
    return x.squeeze(2)


def _channels_last_input(waveforms: Tensor) -> Tensor:
    """(B, S) -> (B, 1, 1, S) with explicit channels-last strides: with one channel both layouts
    are the same memory, and the strides decide which one the convolutions produce."""
    x = torch.empty((waveforms.shape[0], 1, 1, waveforms.shape[1]), dtype=waveforms.dtype,
                    device=waveforms.device, memory_format=torch.channels_last)
    x.copy_(waveforms[:, None, None, :])
    return x


def _run_block(x: Tensor, modules: list[nn.Module], replaced: dict) -> Tensor:
    """One block's ``modules`` on (B, C, 1, T) channels-last ``x``; a module in ``replaced`` runs
    as ``replaced[module](x)`` (the time-chunked runner's whole-recording GroupNorm)."""
    for module in modules:
        if module in replaced:
            x = replaced[module](x)
        elif isinstance(module, nn.Conv1d):
            x = _conv_channels_last(x, module)
        elif isinstance(module, nn.GELU):
            x = torch.ops.aten.gelu_(x)
        elif isinstance(module, nn.GroupNorm) and x.dtype == torch.bfloat16:
            x = _group_norm_bf16(x, module)
        else:
            x = module(x)  # Dropout and GroupNorm keep the channels-last layout
    return x


def _group_norm_bf16(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm of bf16 ``x`` with float32 statistics, without a float32 copy of ``x``.

    torch's CPU kernel takes a bf16 input with float32 affine parameters and accumulates
    in float32; the plain block's upcast would copy the largest activation twice.
    """
    weight = None if norm.weight is None else norm.weight.float()
    bias = None if norm.bias is None else norm.bias.float()
    return F.group_norm(x, norm.num_groups, weight, bias, norm.eps)


def _conv_channels_last(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """``conv`` on (B, C, 1, T) channels-last ``x`` -> (B, C', 1, T') channels-last (no autograd).

    fp32 goes straight to oneDNN's convolution: ``F.conv2d`` sends 1x1 convolutions to a
    slow im2col path when torch runs single-threaded, and oneDNN's NHWC kernels beat a
    plain matmul on the (B*T, C) rows for every block here.
    """
    weight = derived_tensor(conv, "_channels_last_weight", [conv.weight],
                            lambda: conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last))
    stride = [1, conv.stride[0]]
    if x.dtype == weight.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return torch.ops.aten.mkldnn_convolution(x, weight, conv.bias, [0, 0], stride, [1, 1], 1)
    return F.conv2d(x, weight, conv.bias, stride=stride)
