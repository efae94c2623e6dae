"""The CNN front end on a long recording in time chunks, with the same result as in one piece.

A wav2vec 2.0-style CNN has no padding, so final frame ``j`` depends on the input samples
``[j * hop, j * hop + field)`` only (hop 320, field 400 for the 7-block CNN): a span of final
frames is computed exactly from its span of samples. The one global step is the first block's
GroupNorm, which normalises each group over the whole recording; its statistics are gathered
in a first pass over the first convolution's output (float64 sums), then every chunk applies
them as a per-channel affine map. Memory is one chunk's activations plus the (T, C) output,
instead of the first blocks' full-rate activations (ARMHuBERT: ~4.7 MiB per second of audio,
2.8 GiB at 10 minutes). The first convolution runs twice, ~2% of the CNN's FLOPs.

Used by :func:`recycle_distill.inference.blocks.conv_runner.run_conv_blocks` past
:data:`TIME_CHUNKS_FROM_BYTES`; imports only its own layer.
"""

from __future__ import annotations

import itertools
import operator
from typing import Callable

import torch
from torch import Tensor, nn

# Past this size of one utterance's largest block output the CNN runs in time chunks (ARMHuBERT:
# ~50 s of audio; HuBERT Base's 512 channels: ~20 s).
TIME_CHUNKS_FROM_BYTES = 128 * 2**20
# Each chunk's largest block output stays near this size.
CHUNK_ACTIVATION_BYTES = 16 * 2**20


def field_and_hop(convs: list[nn.Conv1d]) -> tuple[int, int]:
    """Receptive field and hop in input samples of one final frame of a stack of unpadded convolutions."""
    hops = [1] + _block_hops(convs)
    return 1 + sum((conv.kernel_size[0] - 1) * hop for conv, hop in zip(convs, hops)), hops[-1]


def chunkable(parts: list[list[nn.Module]]) -> bool:
    """Whether :func:`run_in_time_chunks` applies: unpadded, undilated convolutions first in each
    block, and a GroupNorm (the one global statistic) in the first block only."""
    convs = [block[0] for block in parts]
    plain = all(isinstance(c, nn.Conv1d) and c.padding == (0,) and c.dilation == (1,) and c.groups == 1 for c in convs)
    return plain and not any(isinstance(m, nn.GroupNorm) for block in parts[1:] for m in block)


def run_in_time_chunks(parts: list[list[nn.Module]], waveform: Tensor,
                       run_block: Callable[[Tensor, list[nn.Module], dict], Tensor], to_input: Callable[[Tensor], Tensor]) -> Tensor:
    """One (1, S) waveform through the CNN blocks ``parts`` in time chunks -> (1, T, C) frames.

    Args:
        parts: each block's modules in order (``Conv1d`` first); see :func:`chunkable`.
        waveform: (1, S).
        run_block: ``run_block(x, modules, norms)`` runs one block's modules on the runner's
            layout; a module found in ``norms`` is replaced by ``norms[module](x)``.
        to_input: (1, s) samples -> the runner's input layout.

    Returns:
        (1, T, C), T = (S - field) // hop + 1 as for the whole recording.
    """
    convs = [block[0] for block in parts]
    field, hop = field_and_hop(convs)
    frames = (waveform.shape[1] - field) // hop + 1
    norms = _global_norms(parts[0], waveform, run_block, to_input)
    # Each block's output frames per final frame (hop over the samples per frame of that block).
    per_frame = max(c.out_channels * hop // block_hop for c, block_hop in zip(convs, _block_hops(convs)))
    per_frame *= waveform.element_size()
    step = max(1, CHUNK_ACTIVATION_BYTES // per_frame)
    out = None
    for start in range(0, frames, step):
        stop = min(frames, start + step)
        x = to_input(waveform[:, start * hop : (stop - 1) * hop + field])
        for block in parts:
            x = run_block(x, block, norms)
        chunk = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)  # (1, C, 1, t) -> (1, t, C)
        if out is None:
            out = chunk.new_empty(1, frames, chunk.shape[2])
        out[:, start:stop] = chunk
    return out


def _block_hops(convs: list[nn.Conv1d]) -> list[int]:
    """Input samples per output frame of each block."""
    return list(itertools.accumulate((conv.stride[0] for conv in convs), operator.mul))


def _global_norms(first: list[nn.Module], waveform: Tensor, run_block, to_input) -> dict:
    """The first block's GroupNorm as a per-channel affine map with whole-recording statistics.

    The first convolution (and anything before the norm) runs over the recording in chunks;
    per group, the sum and sum of squares of its outputs are taken in float64.
    """
    index = next((i for i, m in enumerate(first) if isinstance(m, nn.GroupNorm)), None)
    if index is None:
        return {}
    norm, before, conv = first[index], first[:index], first[0]
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    frames = (waveform.shape[1] - kernel) // stride + 1
    # A chunk, its float64 copy and nothing else: three float32 chunks' worth of memory.
    step = max(1, CHUNK_ACTIVATION_BYTES // (3 * conv.out_channels * waveform.element_size()))
    total = torch.zeros(norm.num_channels, dtype=torch.float64)
    squares = torch.zeros(norm.num_channels, dtype=torch.float64)
    for start in range(0, frames, step):
        stop = min(frames, start + step)
        x = run_block(to_input(waveform[:, start * stride : (stop - 1) * stride + kernel]), before, {}).double()
        total += x.sum(dim=(0, 2, 3))  # (1, C, 1, t) -> (C,)
        squares += x.square_().sum(dim=(0, 2, 3))
    groups = norm.num_groups
    total, squares = total.view(groups, -1).sum(dim=1), squares.view(groups, -1).sum(dim=1)  # (C,) -> (G,)
    count = frames * norm.num_channels // groups
    mean = total / count
    variance = (squares / count - mean * mean).clamp_min(0)
    per_group = (variance + norm.eps).rsqrt()
    scale = per_group.repeat_interleave(norm.num_channels // groups)  # (C,)
    shift = -mean.repeat_interleave(norm.num_channels // groups) * scale
    if norm.affine:
        scale, shift = scale * norm.weight.double(), shift * norm.weight.double() + norm.bias.double()
    scale, shift = scale.float().view(1, -1, 1, 1), shift.float().view(1, -1, 1, 1)

    def apply(x: Tensor) -> Tensor:  # (1, C, 1, t), float32 arithmetic, in x's dtype
        return torch.addcmul(shift, x.float(), scale).to(x.dtype).contiguous(memory_format=torch.channels_last)
    return {norm: apply}
