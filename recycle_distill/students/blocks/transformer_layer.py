"""Post-LN transformer layers: one with its own attention, one reusing a previous map."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from recycle_distill.students.blocks.attention import ReusedAttention, SelfAttention
from recycle_distill.students.blocks.table import PLAIN, BlockTable


class _PostLNLayer(nn.Module):
    """Shared residual / LayerNorm / feed-forward part of both layer kinds.

    ``x = LN(x + drop(attn(x))); x = LN(x + drop(fc2(drop(gelu(fc1(x))))))``.
    Subclasses set ``self_attn`` before calling ``_build_feed_forward``.
    """

    self_attn: nn.Module

    def _build_feed_forward(self, embed_dim: int, ffn_dim: int, dropout: float, activation_dropout: float) -> None:
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(activation_dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def _finish(self, x: Tensor, attended: Tensor) -> Tensor:
        x = self.self_attn_layer_norm(x + self.dropout1(attended))
        hidden = self.dropout2(F.gelu(self.fc1(x)))
        return self.final_layer_norm(x + self.dropout3(self.fc2(hidden)))


class TransformerLayer(_PostLNLayer):
    """Post-LN layer with full multi-head self-attention.

    Args:
        embed_dim: E. ffn_dim: feed-forward width. num_heads: H.
        dropout, attention_dropout, activation_dropout: as in the reference config.
        blocks: the block table (:mod:`recycle_distill.students.blocks.table`).
    """

    reuses_attention = False

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        num_heads: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        blocks: BlockTable = PLAIN,
    ) -> None:
        super().__init__()
        self.self_attn = blocks.get(SelfAttention, SelfAttention)(embed_dim, num_heads, attention_dropout)
        self._build_feed_forward(embed_dim, ffn_dim, dropout, activation_dropout)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        previous_probs: Optional[Tensor] = None,
        return_probs: bool = False,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """(B, T, E) -> (B, T, E), plus (B, H, T, T) probabilities when ``return_probs`` (the
        map-free blocks hand over :class:`~recycle_distill.students.blocks.map_free.QueryKeys`)."""
        attended, probs = self.self_attn(x, key_padding_mask, return_probs=return_probs)
        return self._finish(x, attended), probs


class ReuseTransformerLayer(_PostLNLayer):
    """Post-LN layer whose attention map comes from the previous full-attention layer.

    Args:
        embed_dim: E. ffn_dim: feed-forward width. num_heads: H.
        dropout, activation_dropout: as in the reference config (attention dropout is 0).
        pair_like_reference: see :class:`ReusedAttention`.
        blocks: the block table (:mod:`recycle_distill.students.blocks.table`).
    """

    reuses_attention = True

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        num_heads: int,
        dropout: float = 0.1,
        activation_dropout: float = 0.1,
        pair_like_reference: bool = False,
        blocks: BlockTable = PLAIN,
    ) -> None:
        super().__init__()
        self.self_attn = blocks.get(ReusedAttention, ReusedAttention)(embed_dim, num_heads, pair_like_reference)
        self._build_feed_forward(embed_dim, ffn_dim, dropout, activation_dropout)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        previous_probs: Optional[Tensor] = None,
        return_probs: bool = False,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """(B, T, E) -> (B, T, E); passes ``previous_probs`` (a map, or the map-free blocks'
        queries and keys) on if a later layer reuses too."""
        if previous_probs is None:
            raise ValueError("an attention-reuse layer needs the previous full layer's attention map")
        attended = self.self_attn(x, key_padding_mask, previous_probs)
        return self._finish(x, attended), (previous_probs if return_probs else None)
