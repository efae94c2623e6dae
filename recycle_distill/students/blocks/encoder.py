"""The transformer encoder shared by every student: positional conv, LayerNorm, layers."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recycle_distill.students.config import StudentConfig
from recycle_distill.students.blocks.grad import grad_multiply, layer_grad_scales
from recycle_distill.students.blocks.positional import ConvPositionalEmbedding
from recycle_distill.students.blocks.table import PLAIN, BlockTable


class TransformerEncoder(nn.Module):
    """Post-LN encoder (no final LayerNorm after the last layer).

    ``x = LN(x + GELU(pos_conv(x)))`` with padded frames zeroed first, then the layers.
    A layer whose successor reuses attention is asked for its probabilities (which the
    map-free blocks hand over as queries and keys); all others take the fast fused attention path.

    Args:
        config: the student config (dims, dropout, grad scaling, length multiple).
        layers: the transformer layers, in order.
        blocks: the block table (:mod:`recycle_distill.students.blocks.table`).
    """

    def __init__(self, config: StudentConfig, layers: Sequence[nn.Module], blocks: BlockTable = PLAIN) -> None:
        super().__init__()
        self.pos_conv = ConvPositionalEmbedding(config.encoder_embed_dim, config.conv_pos, config.conv_pos_groups,
                                                blocks)
        self.layers = nn.ModuleList(layers)
        self.layer_norm = nn.LayerNorm(config.encoder_embed_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.required_seq_len_multiple = config.required_seq_len_multiple
        self.grad_scales: Optional[list[float]] = layer_grad_scales(len(layers)) if config.layer_grad_scale else None
        reuses = [bool(getattr(layer, "reuses_attention", False)) for layer in layers]
        # Layer i must hand its map on when any later layer, before the next full one, reuses it.
        self.keeps_probs = [i + 1 < len(layers) and reuses[i + 1] for i in range(len(layers))]

    def before_layers(self, x: Tensor, padding_mask: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """Hook for families that reshape the sequence before layer 1 (identity here)."""
        return x, padding_mask

    def forward(
        self, x: Tensor, padding_mask: Optional[Tensor] = None
    ) -> tuple[list[Tensor], Optional[Tensor], Tensor]:
        """Run the encoder.

        Args:
            x: (B, T, E) frame features.
            padding_mask: (B, T), True = padding, or None.

        Returns:
            The N layer outputs, each (B, T', E) (T' = T unless :meth:`before_layers` changes
            it), the (B, T') padding mask, and the (B, T, E) input of the first layer after
            the positional conv and LayerNorm (STaR's intra-layer relation starts there).
        """
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = self.layer_norm(self.pos_conv(x))
        encoder_input = x
        x, padding_mask = self.before_layers(x, padding_mask)
        x, attention_mask, pad_length = self._pad_to_multiple(x, padding_mask)
        x = self.dropout(x)

        results = self.run_layers(x, attention_mask)
        if pad_length:
            results = [r[:, :-pad_length] for r in results]
        return results, padding_mask, encoder_input

    def run_layers(self, x: Tensor, attention_mask: Optional[Tensor]) -> list[Tensor]:
        """(B, T, E) through every layer -> the N layer outputs (B, T, E)."""
        results: list[Tensor] = []
        probs: Optional[Tensor] = None
        for index, layer in enumerate(self.layers):
            x, probs = layer(x, attention_mask, probs, return_probs=self.keeps_probs[index])
            if self.grad_scales is not None and torch.is_grad_enabled():
                x = grad_multiply(x, self.grad_scales[index])
                results.append(grad_multiply(x, 1.0 - self.grad_scales[index]))
            else:  # gradient scaling is the identity in the forward pass
                results.append(x)
        return results

    def _pad_to_multiple(
        self, x: Tensor, padding_mask: Optional[Tensor]
    ) -> tuple[Tensor, Optional[Tensor], int]:
        """Right-pad time to ``required_seq_len_multiple``; the new frames are marked padding."""
        pad_length = -x.shape[1] % self.required_seq_len_multiple
        if not pad_length:
            return x, padding_mask, 0
        x = F.pad(x, (0, 0, 0, pad_length))
        if padding_mask is None:
            padding_mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
            padding_mask[:, -pad_length:] = True
        else:
            padding_mask = F.pad(padding_mask, (0, pad_length), value=True)
        return x, padding_mask, pad_length
