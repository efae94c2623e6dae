"""Attention blocks for CPU inference: one fused q/k/v projection, cache-blocked maps.

On the fast path (CPU, no autograd) the probabilities path walks the (B, H, T, T) maps in
blocks of a few heads (or, for long inputs, of query rows of one head), so each block stays
in the L2 cache (1 MiB a core here) between the softmax that writes it and the matmul that
reads it, and temporaries stay small enough to be reused heap memory rather than fresh
page-faulting mappings. Measured: a full + reuse layer pair on 10 s ~12% faster, the whole
model on 60 s ~1.3x. Anything else runs the plain block.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recycle_distill.students.blocks.map_free import MapFreeReusedAttention, MapFreeSelfAttention
from recycle_distill.inference.blocks.derived import derived_tensor, fast_path_applies

CHUNK_BYTES = 2 * 2**20
# On the fast path a full layer hands its queries and keys instead of its map to the reuse
# layer (recycle_distill.students.blocks.map_free) once the (B, H, T, T) float32 map passes this.
MAP_FREE_FROM_BYTES = 64 * 2**20


def _blocks(batch: int, heads: int, time: int, itemsize: int = 4) -> list[tuple[int, slice, slice]]:
    """(item, heads, query rows) blocks of a (B, H, T, T) map of ``itemsize``-byte values, ~CHUNK_BYTES each.

    Sized by the map's own dtype: a bf16 map takes twice the heads per block of a float32 one
    (4 instead of 2 at T = 499), which measured ~10% faster for the bf16 attention phase
    (benchmarks/attention_variants.py)."""
    map_bytes = itemsize * time * time
    if map_bytes <= CHUNK_BYTES:
        size = min(heads, CHUNK_BYTES // map_bytes)
        return [(b, slice(h, min(heads, h + size)), slice(0, time)) for b in range(batch) for h in range(0, heads, size)]
    rows = max(1, CHUNK_BYTES // (itemsize * time))
    return [
        (b, slice(h, h + 1), slice(r, min(time, r + rows)))
        for b in range(batch) for h in range(heads) for r in range(0, time, rows)
    ]


def map_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype attention maps are held in: bfloat16 in bf16 inference, float32 otherwise.

    torch's CPU softmax on bfloat16 computes in float32 internally and rounds once, so the
    bf16 maps skip two full-map casts per layer; a map handed on to a reuse layer goes
    through softmax again, where its bf16 rounding (~3e-3 relative) moves the output far
    less than the bf16 values it multiplies.
    """
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


class FastSelfAttention(MapFreeSelfAttention):
    """:class:`SelfAttention` with q/k/v as one matmul, the blocked probabilities path, and in
    bf16 blocked explicit attention instead of the fused kernel. Past :data:`MAP_FREE_FROM_BYTES`
    of map it hands on queries and keys instead (:class:`MapFreeSelfAttention`).

    The fused (3E, E) weight is derived from the three projections (rebuilt if they change).
    Projections that are not plain Linears (e.g. dynamically quantized ones) run one by one.
    """

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, E) -> q, k, v, each (B, T, E)."""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        if torch.is_grad_enabled() or not all(type(p) is nn.Linear for p in projections):
            return super().project_qkv(x)
        sources = [t for p in projections for t in (p.weight, p.bias)]
        weight = derived_tensor(self, "_qkv_weight", sources, lambda: torch.cat([p.weight for p in projections]))
        bias = derived_tensor(self, "_qkv_bias", sources, lambda: torch.cat([p.bias for p in projections]))
        q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)
        return q, k, v

    def hands_over_queries(self, x: Tensor) -> bool:
        """On the fast path, when the (B, H, T, T) float32 map of this (B, T, E) input passes
        :data:`MAP_FREE_FROM_BYTES`; the plain map otherwise (and under autograd)."""
        return fast_path_applies(x) and 4 * x.shape[0] * self.num_heads * x.shape[1] ** 2 > MAP_FREE_FROM_BYTES

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor], dropout: float) -> Tensor:
        """As :meth:`SelfAttention.attend`; in bf16 on the fast path, explicit blocked matmuls.

        torch's fused CPU attention kernel runs no faster in bf16 than in fp32 (~110-155
        GFLOP/s here at T = 499, d = 40-64), while bf16 matmuls around a bf16 softmax (float32
        inside) reach ~260-390: 2.3-2.5x. In fp32 the fused kernel is as fast and is kept.
        """
        if q.dtype != torch.bfloat16 or dropout or not fast_path_applies(q):
            return super().attend(q, k, v, key_padding_mask, dropout)
        return _blocked_attention(q * self.scaling, k, v, key_padding_mask)

    def probs_and_attended(
        self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """As :meth:`SelfAttention.probs_and_attended`, block by block on the fast path (maps in
        :func:`map_dtype`)."""
        if not fast_path_applies(q):
            return super().probs_and_attended(q, k, v, key_padding_mask)
        batch, heads, time, _ = q.shape
        probs = q.new_empty(batch, heads, time, time, dtype=map_dtype(q.dtype))
        return probs, _blocked_attention(q, k, v, key_padding_mask, probs)


class FastReusedAttention(MapFreeReusedAttention):
    """:class:`ReusedAttention` with the re-softmax and the value matmul done block by block; a
    :class:`~recycle_distill.students.blocks.map_free.QueryKeys` handover is recomputed instead."""

    def attend(self, reused_probs: Tensor, v: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
        """(B, H, T, T) map and (B, H, T, d) values -> (B, H, T, d)."""
        if not fast_path_applies(v):
            return super().attend(reused_probs, v, key_padding_mask)
        attended = v.new_empty(v.shape)
        for b, head_block, rows in _blocks(*reused_probs.shape[:3], reused_probs.element_size()):
            # The map's own dtype (float32, or bf16 in bf16 inference: see map_dtype).
            block = reused_probs[b, head_block, rows]
            if key_padding_mask is not None:
                block = block.masked_fill(key_padding_mask[b], float("-inf"))
            torch.matmul(torch.softmax(block, dim=-1).to(v.dtype), v[b, head_block], out=attended[b, head_block, rows])
        return attended


def _blocked_attention(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor], probs: Optional[Tensor] = None
) -> Tensor:
    """softmax(q k^T) v block by block (see :func:`_blocks`), without autograd.

    Args:
        q: (B, H, T, d), already scaled. k, v: (B, H, T, d).
        key_padding_mask: (B, T), True = padding, or None.
        probs: (B, H, T, T) to receive the softmax probabilities (its dtype is the maps'), or
            None to keep none (the maps are then in q's dtype).

    Returns:
        The (B, H, T, d) attended values.
    """
    batch, heads, time, _ = q.shape
    scores_dtype = q.dtype if probs is None else probs.dtype
    attended = v.new_empty(v.shape)
    blocks = _blocks(batch, heads, time, torch.empty((), dtype=scores_dtype).element_size())
    # Fresh scores and probabilities per block: a reused buffer with the softmax written over the
    # scores measured no faster (benchmarks/attention_variants.py).
    for b, head_block, rows in blocks:
        scores = torch.matmul(q[b, head_block, rows], k[b, head_block].transpose(-1, -2)).to(scores_dtype)
        if key_padding_mask is not None:
            scores.masked_fill_(key_padding_mask[b], float("-inf"))
        if probs is None:
            block = torch.softmax(scores, dim=-1)
        else:
            block = torch.softmax(scores, dim=-1, out=probs[b, head_block, rows])
        torch.matmul(block.to(v.dtype), v[b, head_block], out=attended[b, head_block, rows])
    return attended
