"""Self-attention blocks: full multi-head attention and ARMHuBERT's attention reuse."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, T, E) -> (B, H, T, E/H)."""
    batch, time, embed = x.shape
    return x.view(batch, time, num_heads, embed // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, d) -> (B, T, H*d)."""
    batch, heads, time, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, time, heads * head_dim)


def _masked_softmax(scores: Tensor, key_padding_mask: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """Softmax over keys in float32 with padded keys at -inf; returns ``dtype``.

    Args:
        scores: (B, H, T, S).
        key_padding_mask: (B, S), True = padding, or None.
    """
    scores = scores.float()
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1).to(dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention (post-LN transformer style, fairseq parameter names).

    Parameters are registered k, v, q, out to keep the reference state-dict order. Each
    projection is called as its own module, so module swaps (dynamic quantization, the
    fused projection of :mod:`recycle_distill.inference.blocks.attention`) see ordinary Linears.

    Args:
        embed_dim: E.
        num_heads: H.
        dropout: dropout on attention probabilities.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = dropout
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        return_probs: bool = False,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """Attend over time.

        Args:
            x: (B, T, E).
            key_padding_mask: (B, T), True = padding, or None.
            return_probs: also return the softmax probabilities (before dropout).

        Returns:
            (B, T, E) output and (B, H, T, T) float32 probabilities or None.
        """
        q, k, v = (_split_heads(t, self.num_heads) for t in self.project_qkv(x))
        dropout = self.dropout if self.training else 0.0
        if not return_probs:
            return self.out_proj(_merge_heads(self.attend(q, k, v, key_padding_mask, dropout))), None
        probs, attended = self.probs_and_attended(q * self.scaling, k, v, key_padding_mask)
        return self.out_proj(_merge_heads(attended)), probs

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, E) -> q, k, v, each (B, T, E)."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor], dropout: float) -> Tensor:
        """softmax(q k^T / sqrt(d)) v without keeping the probabilities (fused kernel).

        Args:
            q, k, v: (B, H, T, d), q not yet scaled.
            key_padding_mask: (B, T), True = padding, or None.
            dropout: dropout probability on the attention weights.

        Returns:
            (B, H, T, d).
        """
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)

    def probs_and_attended(
        self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Softmax probabilities (float32, before dropout) and the values they attend.

        Args:
            q: (B, H, T, d), already scaled. k, v: (B, H, T, d).
            key_padding_mask: (B, T), True = padding, or None.

        Returns:
            (B, H, T, T) float32 probabilities and the (B, H, T, d) attended values.
        """
        probs = _masked_softmax(torch.matmul(q, k.transpose(-1, -2)), key_padding_mask, torch.float32)
        dropout = self.dropout if self.training else 0.0
        return probs, torch.matmul(F.dropout(probs, dropout, self.training).to(v.dtype), v)


def reference_pairing(probs: Tensor) -> Tensor:
    """Re-pair a (B, H, T, S) map the way the reference code did for batches.

    The reference held maps as (H, B, T, S) and reshaped them to (B*H, T, S) without a
    transpose, so head h of item b read the map of head (b*H+h)//B of item (b*H+h)%B.
    With B = 1 this is the identity.
    """
    batch, heads, time, keys = probs.shape
    return probs.transpose(0, 1).reshape(batch, heads, time, keys)


class ReusedAttention(nn.Module):
    """ARMHuBERT's attention-reuse block: values from this layer, attention from the last full one.

    It holds only ``v_proj`` and ``out_proj``. As in the released models, the reused map is
    a probability map that goes through softmax once more (padded keys at -inf), which makes
    it close to uniform; this is what the weights were trained with. No attention dropout.

    Args:
        embed_dim: E.
        num_heads: H.
        pair_like_reference: reproduce the reference's batch/head pairing (see
            :func:`reference_pairing`) instead of giving each utterance its own maps.
    """

    def __init__(self, embed_dim: int, num_heads: int, pair_like_reference: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pair_like_reference = pair_like_reference
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor], reused_probs: Tensor) -> Tensor:
        """Apply a borrowed attention map.

        Args:
            x: (B, T, E).
            key_padding_mask: (B, T), True = padding, or None.
            reused_probs: (B, H, T, T) probabilities from the previous full-attention layer.

        Returns:
            (B, T, E).
        """
        if self.pair_like_reference:
            reused_probs = reference_pairing(reused_probs)
        v = _split_heads(self.v_proj(x), self.num_heads)
        return self.out_proj(_merge_heads(self.attend(reused_probs, v, key_padding_mask)))

    def attend(self, reused_probs: Tensor, v: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
        """softmax(reused map) @ v: (B, H, T, T) and (B, H, T, d) -> (B, H, T, d)."""
        return torch.matmul(_masked_softmax(reused_probs, key_padding_mask, v.dtype), v)
