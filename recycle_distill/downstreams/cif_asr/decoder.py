"""The CIF recognizer's autoregressive decoder: causal self-attention only, no cross-attention.

All acoustic information reaches the decoder through the CIF vectors, one per output token
(``docs/cif.md``, "Decoder"). At step ``t`` (1-based) the input is
``Linear(concat(embed_scale * embed(y_{t-1}), c_{t-1}))`` with ``y_0 = <bos>`` and ``c_0 = 0``;
the layers are pre-LN; the output is ``Linear(concat(LN(h_t), c_t))`` (the pre-vocabulary state,
which LRD distils), then the vocabulary projection.

Positions: fixed sinusoidal encodings are added to the projected step input. They need no
maximum length (an utterance may fire more often than any training target is long) and an
incremental step only needs its offset. The decoder would also see the order through causal
attention alone, but explicit positions make "the k-th firing" directly visible.

The teacher-forced :meth:`CifDecoder.forward` and the incremental :meth:`CifDecoder.step`
(with a key/value cache) compute the same function; tests check that they agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CifDecoder", "DecoderCache", "DecoderOutput", "sinusoidal_positions"]


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encodings (sin on the first half of the channels, cos on the second).

    Args:
        positions: (N,) integer positions.
        dim: channels (even or odd; an odd last channel is zero).

    Returns:
        (N, dim) float32 encodings.
    """
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    frequencies = torch.exp(-scale * torch.arange(half, dtype=torch.float32, device=positions.device))
    angles = positions.to(torch.float32).unsqueeze(1) * frequencies.unsqueeze(0)
    encoding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        encoding = F.pad(encoding, (0, 1))
    return encoding


@dataclass
class DecoderCache:
    """Keys and values of the past steps, per layer: (B, heads, steps, head_dim) each."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def steps(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def reorder(self, index: torch.Tensor) -> "DecoderCache":
        """The cache of rows ``index`` (beam search keeps the surviving hypotheses' histories)."""
        return DecoderCache([k.index_select(0, index) for k in self.keys], [v.index_select(0, index) for v in self.values])


@dataclass
class DecoderOutput:
    """logits (B, N, V) and the pre-vocabulary state (B, N, d_model)."""

    logits: torch.Tensor
    state: torch.Tensor


class _CausalSelfAttention(nn.Module):
    """Multi-head self-attention that attends to the current and earlier positions only."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, steps, dim = x.shape
        q, k, v = self.qkv(x).view(batch, steps, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # each (B, H, steps, head_dim)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        batch, heads, steps, head_dim = x.shape
        return self.out(x.transpose(1, 2).reshape(batch, steps, heads * head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, d) -> (B, N, d), position n attending to 0..n."""
        q, k, v = self._split(x)
        p = self.dropout if self.training else 0.0
        return self._merge(F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True))

    def step(self, x: torch.Tensor, past_k: Optional[torch.Tensor], past_v: Optional[torch.Tensor]):
        """x: (B, 1, d) -> ((B, 1, d), keys, values) with this step appended to the past."""
        q, k, v = self._split(x)
        if past_k is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        p = self.dropout if self.training else 0.0
        return self._merge(F.scaled_dot_product_attention(q, k, v, dropout_p=p)), k, v


class _DecoderLayer(nn.Module):
    """Pre-LN block: x + SA(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = _CausalSelfAttention(dim, heads, dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x)))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))

    def step(self, x: torch.Tensor, past_k: Optional[torch.Tensor], past_v: Optional[torch.Tensor]):
        attended, k, v = self.attention.step(self.attention_norm(x), past_k, past_v)
        x = x + self.dropout(attended)
        return x + self.dropout(self.ffn(self.ffn_norm(x))), k, v


class CifDecoder(nn.Module):
    """Autoregressive decoder over CIF vectors (one step per firing).

    Args:
        vocab_size: output units including the specials.
        dim: d_model (the CIF vectors' width).
        layers, heads, ffn_dim, dropout: the pre-LN self-attention stack.
        embed_scale: multiplies the token embedding (16 in the original, sqrt(256)).
        padding_idx: the PAD unit (its embedding stays zero).
    """

    def __init__(self, vocab_size: int, dim: int, layers: int = 2, heads: int = 4, ffn_dim: int = 1024,
                 dropout: float = 0.1, embed_scale: float = 16.0, padding_idx: Optional[int] = None):
        super().__init__()
        self.dim = dim
        self.embed_scale = embed_scale
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        nn.init.normal_(self.embed.weight, std=dim ** -0.5)  # so embed_scale * embed is O(1) per channel
        if padding_idx is not None:
            with torch.no_grad():
                self.embed.weight[padding_idx].zero_()
        self.input_proj = nn.Linear(2 * dim, dim)
        self.input_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(_DecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)
        self.output_proj = nn.Linear(2 * dim, dim)
        self.vocab_proj = nn.Linear(dim, vocab_size)

    def _step_input(self, prev_tokens: torch.Tensor, prev_cif: torch.Tensor, offset: int) -> torch.Tensor:
        """(B, N) tokens and (B, N, d) previous CIF vectors -> (B, N, d) layer input."""
        x = self.input_proj(torch.cat([self.embed_scale * self.embed(prev_tokens), prev_cif], dim=-1))
        positions = torch.arange(offset, offset + prev_tokens.shape[1], device=prev_tokens.device)
        return self.input_dropout(x + sinusoidal_positions(positions, self.dim).to(x.dtype))

    def _output(self, hidden: torch.Tensor, cif: torch.Tensor) -> DecoderOutput:
        state = self.output_proj(torch.cat([self.final_norm(hidden), cif], dim=-1))
        return DecoderOutput(logits=self.vocab_proj(state), state=state)

    def forward(self, prev_tokens: torch.Tensor, cif: torch.Tensor) -> DecoderOutput:
        """Teacher-forced pass over whole sequences.

        Args:
            prev_tokens: (B, N) long, ``<bos>, y_1 .. y_{N-1}`` (padding positions: anything).
            cif: (B, N, d) CIF vectors ``c_1 .. c_N`` (the decoder shifts them itself).

        Returns:
            :class:`DecoderOutput` with logits (B, N, V) and state (B, N, d). Position n depends on
            positions <= n only, so right padding never changes the valid positions.
        """
        prev_cif = F.pad(cif, (0, 0, 1, 0))[:, :-1]  # c_0 = 0
        x = self._step_input(prev_tokens, prev_cif, offset=0)
        for layer in self.layers:
            x = layer(x)
        return self._output(x, cif)

    def step(self, prev_token: torch.Tensor, prev_cif: torch.Tensor, cif: torch.Tensor,
             cache: Optional[DecoderCache] = None) -> tuple[torch.Tensor, torch.Tensor, DecoderCache]:
        """One incremental step.

        Args:
            prev_token: (B,) long ``y_{t-1}`` (``<bos>`` at the first step).
            prev_cif: (B, d) ``c_{t-1}`` (zeros at the first step).
            cif: (B, d) ``c_t``.
            cache: the previous steps' keys and values (None at the first step).

        Returns:
            (logits (B, V), state (B, d), the cache with this step appended).
        """
        offset = cache.steps if cache is not None else 0
        x = self._step_input(prev_token.unsqueeze(1), prev_cif.unsqueeze(1), offset)
        keys, values = [], []
        for number, layer in enumerate(self.layers):
            past_k = cache.keys[number] if cache is not None else None
            past_v = cache.values[number] if cache is not None else None
            x, k, v = layer.step(x, past_k, past_v)
            keys.append(k)
            values.append(v)
        out = self._output(x, cif.unsqueeze(1))
        return out.logits[:, 0], out.state[:, 0], DecoderCache(keys, values)
