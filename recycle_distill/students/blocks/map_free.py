"""Map-free attention reuse: the reuse layer recomputes its predecessor's map block by block.

ARMHuBERT's reuse layer computes ``softmax(mask(P)) @ V_cur`` with the full layer's probabilities
``P = softmax(mask(Q_prev K_prev^T / sqrt(d)))``. Stored, ``P`` is (B, H, T, T): 515 MiB a layer
at 60 s, 43 GB at 10 minutes. Softmax is taken row by row, so a block of query rows of ``P``
needs only those rows of ``Q_prev`` and all of ``K_prev``: the full layer hands over its
scaled queries and keys (:class:`QueryKeys`, (B, H, T, d) each, 1/(2T/d) of the map's size)
and the reuse layer rebuilds ``P`` one block of rows at a time, forward and backward
(:class:`RecomputedReuse`, a custom autograd Function that saves only q, k and v). Memory is
linear in T: the inputs plus a fixed block budget (:data:`BLOCK_BYTES`). The cost is one
extra ``Q K^T`` and softmax per reuse layer in the forward pass and two in the backward pass.

The blocks here are chosen when a student is built (``build_student(..., blocks="map_free")``,
:data:`MAP_FREE_BLOCKS`); the plain blocks keep the reference formulation.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from recycle_distill.students.blocks.attention import (
    ReusedAttention, SelfAttention, _merge_heads, _split_heads, reference_pairing,
)

# float32 bytes of one recomputed block of probabilities (forward holds ~3 such temporaries,
# backward ~5). 4 MiB: large enough for efficient matmuls, small next to any long input.
BLOCK_BYTES = 4 * 2**20
# Fewer query rows than this per block make the matmuls inefficient: split heads instead.
MIN_ROWS = 32


class QueryKeys(NamedTuple):
    """What a full-attention layer hands a reuse layer instead of its (B, H, T, T) map.

    Attributes:
        q: (B, H, T, d) queries, already scaled by 1/sqrt(d).
        k: (B, H, T, d) keys.
    """

    q: Tensor
    k: Tensor


def row_blocks(groups: int, time: int, keys: int, budget: int) -> list[tuple[slice, slice]]:
    """(group slice, query-row slice) blocks of a (G, T, S) float32 map, ~``budget`` bytes each.

    All groups at once while that leaves at least :data:`MIN_ROWS` rows a block, else fewer
    groups (one at the least); at least one row a block whatever the budget.
    """
    row_bytes = 4 * keys
    size = groups
    if budget // (groups * row_bytes) < min(MIN_ROWS, time):
        size = max(1, min(groups, budget // (MIN_ROWS * row_bytes)))
    rows = max(1, min(time, budget // (size * row_bytes)))
    return [(slice(g, min(groups, g + size)), slice(r, min(time, r + rows)))
            for g in range(0, groups, size) for r in range(0, time, rows)]


def _masked(scores: Tensor, mask: Optional[Tensor]) -> Tensor:
    """(g, t, S) float32 with keys where ``mask`` (g, S) is True at -inf."""
    return scores if mask is None else scores.masked_fill(mask[:, None, :], float("-inf"))


def _block_maps(q: Tensor, k: Tensor, first: Optional[Tensor], second: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """The full layer's probabilities P and the reused weights A = softmax(mask(P)) of one block.

    Args:
        q: (g, t, d) scaled queries. k: (g, S, d) keys, both in the full layer's dtype (the
            scores are taken in it, then float32, as :class:`SelfAttention` does).
        first: (g, S) the full layer's key padding (True = padding) or None.
        second: (g, S) the reuse layer's key padding or None.

    Returns:
        P and A, (g, t, S) float32 each.
    """
    probs = torch.softmax(_masked(torch.matmul(q, k.transpose(-1, -2)).float(), first), dim=-1)
    return probs, torch.softmax(_masked(probs, second), dim=-1)


class RecomputedReuse(torch.autograd.Function):
    """``softmax(mask2(softmax(mask1(q k^T)))) @ v`` over (G, T, *) without storing a (T, S) map.

    Forward and backward walk :func:`row_blocks`; only q, k, v and the masks are saved. The
    blocks run with autocast off, in the inputs' dtypes (under bf16 autocast the projections
    hand in bf16 q, k, v: scores in bf16, both softmaxes in float32, A cast to v's dtype, as the
    plain blocks compute); gradients are computed in float32 and returned in the inputs' dtypes.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, first: Optional[Tensor], second: Optional[Tensor]) -> Tensor:
        """q: (G, T, d) scaled. k: (G, S, d). v: (G, S, e). first, second: (G, S) bool or None. -> (G, T, e)."""
        ctx.save_for_backward(q, k, v, first, second)
        out = v.new_empty(q.shape[0], q.shape[1], v.shape[-1])
        with torch.autocast(q.device.type, enabled=False):
            for groups, rows in row_blocks(q.shape[0], q.shape[1], k.shape[1], BLOCK_BYTES):
                _, weights = _block_maps(q[groups, rows], k[groups], _part(first, groups), _part(second, groups))
                torch.matmul(weights.to(v.dtype), v[groups], out=out[groups, rows])
        return out

    @staticmethod
    @once_differentiable  # the blocks' own gradients are not differentiated again: refuse, don't go wrong
    def backward(ctx, grad_out: Tensor) -> tuple[Optional[Tensor], ...]:
        q, k, v, first, second = ctx.saved_tensors
        grad_q, grad_k, grad_v = (torch.zeros(t.shape, dtype=torch.float32, device=t.device) for t in (q, k, v))
        with torch.autocast(q.device.type, enabled=False):
            for groups, rows in row_blocks(q.shape[0], q.shape[1], k.shape[1], BLOCK_BYTES):
                q_block, k_block = q[groups, rows], k[groups]
                probs, weights = _block_maps(q_block, k_block, _part(first, groups), _part(second, groups))
                grad_block = grad_out[groups, rows].float()  # (g, t, e)
                grad_v[groups] += torch.matmul(weights.transpose(-1, -2), grad_block)
                grad_weights = torch.matmul(grad_block, v[groups].float().transpose(-1, -2))  # (g, t, S)
                grad_probs = weights * (grad_weights - (grad_weights * weights).sum(-1, keepdim=True))
                grad_scores = probs * (grad_probs - (grad_probs * probs).sum(-1, keepdim=True))
                grad_q[groups, rows] = torch.matmul(grad_scores, k_block.float())
                grad_k[groups] += torch.matmul(grad_scores.transpose(-1, -2), q_block.float())
        return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype), None, None


def _part(mask: Optional[Tensor], groups: slice) -> Optional[Tensor]:
    return None if mask is None else mask[groups]


def recomputed_reuse(
    source: QueryKeys, v: Tensor, key_padding_mask: Optional[Tensor], pair_like_reference: bool = False
) -> Tensor:
    """A reuse layer's attended values from the full layer's queries and keys.

    Equal to ``softmax(mask(P)) @ v`` with ``P`` the full layer's (B, H, T, T) probabilities
    (see :class:`ReusedAttention`), in memory linear in T.

    Args:
        source: the full layer's :class:`QueryKeys`, (B, H, T, d) each.
        v: (B, H, T, e) this layer's values.
        key_padding_mask: (B, T), True = padding, or None (the same mask both layers saw).
        pair_like_reference: re-pair maps across the batch as :func:`reference_pairing` does.

    Returns:
        (B, H, T, e).
    """
    batch, heads, time, _ = source.q.shape
    q, k = source.q, source.k
    first = second = None
    if key_padding_mask is not None:
        second = key_padding_mask[:, None, :].expand(batch, heads, time)  # (B, H, S)
        first = second
    if pair_like_reference:
        # Item b's head h reads the map of another (item, head): its queries, keys and key mask.
        q, k = reference_pairing(q), reference_pairing(k)
        if first is not None:
            first = reference_pairing(first[..., None])[..., 0]
    flat = [None if t is None else t.reshape(batch * heads, *t.shape[2:]) for t in (q, k, v, first, second)]
    attended = RecomputedReuse.apply(*flat)  # (B*H, T, e)
    return attended.view(batch, heads, time, v.shape[-1])


class MapFreeSelfAttention(SelfAttention):
    """:class:`SelfAttention` that, asked for its probabilities, hands over :class:`QueryKeys`
    and attends with the fused kernel (no map is ever formed)."""

    def forward(
        self, x: Tensor, key_padding_mask: Optional[Tensor] = None, return_probs: bool = False
    ) -> tuple[Tensor, Optional[object]]:
        """(B, T, E) -> (B, T, E) and, when ``return_probs``, the (B, H, T, d) queries and keys
        (or the plain (B, H, T, T) map where :meth:`hands_over_queries` says no)."""
        if not return_probs or not self.hands_over_queries(x):
            return super().forward(x, key_padding_mask, return_probs)
        q, k, v = (_split_heads(t, self.num_heads) for t in self.project_qkv(x))
        dropout = self.dropout if self.training else 0.0
        attended = self.attend(q, k, v, key_padding_mask, dropout)
        return self.out_proj(_merge_heads(attended)), QueryKeys(q * self.scaling, k)

    def hands_over_queries(self, x: Tensor) -> bool:
        """Whether to hand over queries and keys instead of the map for this (B, T, E) input: always."""
        return True


class MapFreeReusedAttention(ReusedAttention):
    """:class:`ReusedAttention` that also takes :class:`QueryKeys` and recomputes the map block
    by block (:func:`recomputed_reuse`); a (B, H, T, T) map still takes the plain path."""

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor], reused_probs: object) -> Tensor:
        """(B, T, E), (B, T) padding or None, a map or :class:`QueryKeys` -> (B, T, E)."""
        if not isinstance(reused_probs, QueryKeys):
            return super().forward(x, key_padding_mask, reused_probs)
        v = _split_heads(self.v_proj(x), self.num_heads)
        attended = recomputed_reuse(reused_probs, v, key_padding_mask, self.pair_like_reference)
        return self.out_proj(_merge_heads(attended))


# The block table of build_student(..., blocks="map_free") (see students/blocks/table.py).
MAP_FREE_BLOCKS = MappingProxyType({SelfAttention: MapFreeSelfAttention, ReusedAttention: MapFreeReusedAttention})
