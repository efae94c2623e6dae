"""ARMHuBERT written the way the original research code computes it, for benchmark B2.

This is our own transcription of the op sequence that ``docs/students.md`` (§4-§8)
describes for the released ARMHuBERT (fairseq-style modules), not a copy of
that code. It exists to time our student against the reference formulation on identical
weights: its state-dict keys are the reference keys, so ``load_state_dict`` takes our
student's weights unchanged.

What makes it the reference formulation (and what our student does instead):

* CNN: channels-first ``Conv1d`` (B, C, T) blocks, GroupNorm in fp32 on block 0, GELU.
* Positional conv: the weight-normed weight ``g * v / ||v||`` is recomputed on every
  forward (``torch.nn.utils.weight_norm``'s pre-forward hook does the same).
* Encoder: time-major (T, B, E) layout, with the transposes that implies.
* Attention: separate q/k/v projections, ``q *= head_dim ** -0.5``, heads folded into the
  batch as (B*H, T, d) with ``contiguous().view().transpose()``, ``bmm`` scores, padded keys
  at -inf, softmax in fp32, dropout, ``bmm`` with v, heads unfolded, ``out_proj``.
* Reuse layers: the previous full layer's (H, B, T, S) probability map is reshaped to
  (B*H, T, S) *without* a transpose (the batch/head pairing of docs/students.md §9; the
  identity when B = 1) and goes through softmax a second time.
* Layer-wise gradient scaling (forward identity) and per-layer projection heads on the
  time-major layer outputs transposed back to batch-first.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recycle_distill.students.config import StudentConfig
from recycle_distill.students.blocks.grad import grad_multiply, layer_grad_scales


class RefFp32GroupNorm(nn.GroupNorm):
    """GroupNorm evaluated in float32."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.type_as(x)


class RefFeatureExtractor(nn.Module):
    """``conv_layers.i = Sequential(Conv1d, Dropout, [GroupNorm], GELU)`` on (B, 1, S)."""

    def __init__(self, layers: list[tuple[int, int, int]], conv_bias: bool) -> None:
        super().__init__()
        blocks = []
        in_dim = 1
        for index, (dim, kernel, stride) in enumerate(layers):
            parts: list[nn.Module] = [nn.Conv1d(in_dim, dim, kernel, stride=stride, bias=conv_bias), nn.Dropout(0.0)]
            if index == 0:
                parts.append(RefFp32GroupNorm(dim, dim, affine=True))
            parts.append(nn.GELU())
            blocks.append(nn.Sequential(*parts))
            in_dim = dim
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, source: Tensor) -> Tensor:
        """(B, S) -> (B, C, T)."""
        x = source.unsqueeze(1)
        for conv in self.conv_layers:
            x = conv(x)
        return x


class RefWeightNormConv(nn.Module):
    """Grouped Conv1d whose weight is recomputed from ``weight_g``, ``weight_v`` every call."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.groups = groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size).normal_(0, 0.02))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_v * (self.weight_g / torch.norm_except_dim(self.weight_v, 2, 2))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class RefPosConv(nn.Sequential):
    """``Sequential(weight-normed conv, SamePad, GELU)`` with the conv as child ``0``."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__(RefWeightNormConv(channels, kernel_size, groups))
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        x = self[0](x)
        if self.remove:
            x = x[:, :, : -self.remove]
        return F.gelu(x)


class RefMultiheadAttention(nn.Module):
    """Time-major multi-head attention returning its fp32 (H, B, T, S) probabilities."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = dropout
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _fold(self, x: Tensor, bsz: int) -> Tensor:
        """(T, B, E) -> (B*H, T, d)."""
        return x.contiguous().view(-1, bsz * self.num_heads, self.head_dim).transpose(0, 1)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """(T, B, E) -> (T, B, E) and (H, B, T, S) float32 probabilities."""
        tgt_len, bsz, embed_dim = x.shape
        q = self.q_proj(x)
        k = self.k_proj(x)
        v = self.v_proj(x)
        q = q * self.scaling
        q, k, v = self._fold(q, bsz), self._fold(k, bsz), self._fold(v, bsz)
        src_len = k.size(1)
        weights = torch.bmm(q, k.transpose(1, 2))
        if key_padding_mask is not None:
            weights = weights.view(bsz, self.num_heads, tgt_len, src_len)
            weights = weights.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            weights = weights.view(bsz * self.num_heads, tgt_len, src_len)
        weights_float = F.softmax(weights, dim=-1, dtype=torch.float32)
        probs = F.dropout(weights_float.type_as(weights), self.dropout, self.training)
        attn = torch.bmm(probs, v)
        attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
        attn = self.out_proj(attn)
        attn_map = weights_float.view(bsz, self.num_heads, tgt_len, src_len).transpose(1, 0)
        return attn, attn_map


class RefReuseAttention(nn.Module):
    """Attention with a borrowed map: values from this layer, softmax applied to the map again."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor], attn_map: Tensor) -> Tensor:
        """(T, B, E) and an (H, B, T, S) map -> (T, B, E)."""
        tgt_len, bsz, embed_dim = x.shape
        v = self.v_proj(x).contiguous().view(-1, bsz * self.num_heads, self.head_dim).transpose(0, 1)
        src_len = v.size(1)
        weights = attn_map.reshape(bsz * self.num_heads, tgt_len, src_len)  # no transpose: docs/students.md §9
        if key_padding_mask is not None:
            weights = weights.view(bsz, self.num_heads, tgt_len, src_len)
            weights = weights.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            weights = weights.view(bsz * self.num_heads, tgt_len, src_len)
        weights_float = F.softmax(weights, dim=-1, dtype=torch.float32)
        attn = torch.bmm(weights_float.type_as(v), v)
        attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
        return self.out_proj(attn)


class RefLayer(nn.Module):
    """Post-LN transformer layer on (T, B, E); full or reuse attention."""

    def __init__(self, config: StudentConfig, computes_attention: bool) -> None:
        super().__init__()
        embed, ffn, heads = config.encoder_embed_dim, config.encoder_ffn_embed_dim, config.encoder_attention_heads
        self.computes_attention = computes_attention
        self.self_attn: nn.Module = (
            RefMultiheadAttention(embed, heads, config.attention_dropout) if computes_attention
            else RefReuseAttention(embed, heads)
        )
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.activation_dropout)
        self.dropout3 = nn.Dropout(config.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed)
        self.fc1 = nn.Linear(embed, ffn)
        self.fc2 = nn.Linear(ffn, embed)
        self.final_layer_norm = nn.LayerNorm(embed)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor], attn_map: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        residual = x
        if self.computes_attention:
            x, attn_map = self.self_attn(x, key_padding_mask)
        else:
            assert attn_map is not None
            x = self.self_attn(x, key_padding_mask, attn_map)
        x = self.dropout1(x)
        x = residual + x
        x = self.self_attn_layer_norm(x)
        residual = x
        x = F.gelu(self.fc1(x))
        x = self.dropout2(x)
        x = self.fc2(x)
        x = self.dropout3(x)
        x = residual + x
        x = self.final_layer_norm(x)
        return x, attn_map


class RefEncoder(nn.Module):
    """Positional conv, LayerNorm, then the layers in time-major layout."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        assert config.reuse_pattern is not None
        self.pos_conv = RefPosConv(config.encoder_embed_dim, config.conv_pos, config.conv_pos_groups)
        self.layers = nn.ModuleList(RefLayer(config, bool(full)) for full in config.reuse_pattern)
        self.layer_norm = nn.LayerNorm(config.encoder_embed_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.grad_scales = layer_grad_scales(len(self.layers)) if config.layer_grad_scale else None

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> list[Tensor]:
        """(B, T, E) -> the N layer outputs, each time-major (T, B, E)."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x_conv = self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = x + x_conv
        x = self.layer_norm(x)
        x = self.dropout(x)
        x = x.transpose(0, 1)
        results = []
        attn_map: Optional[Tensor] = None
        for index, layer in enumerate(self.layers):
            x, attn_map = layer(x, padding_mask, attn_map)
            if self.grad_scales is not None:
                x = grad_multiply(x, self.grad_scales[index])
                results.append(grad_multiply(x, 1.0 - self.grad_scales[index]))
            else:
                results.append(x)
        return results


class RefProjectionHead(nn.Module):
    """``lin_proj`` = Linear(E, D)."""

    def __init__(self, embed_dim: int, output_dim: int) -> None:
        super().__init__()
        self.lin_proj = nn.Linear(embed_dim, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin_proj(x)


class ReferenceARMHuBERT(nn.Module):
    """ARMHuBERT in the reference formulation; same state-dict keys as our student.

    Only the configuration the released ARMHuBERT models use is covered (heads on every
    layer, ``pred_head_final_dim`` != E, ``required_seq_len_multiple`` = 1).
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        assert config.layerwise_proj and config.pred_head_final_dim != config.encoder_embed_dim
        assert config.required_seq_len_multiple == 1 and config.crop_seq_to_multiple == 1
        embed, cnn_dim = config.encoder_embed_dim, config.conv_feature_layers[-1][0]
        self.mask_emb = nn.Parameter(torch.empty(embed).uniform_())
        self.feature_extractor = RefFeatureExtractor(list(config.conv_feature_layers), config.conv_bias)
        self.post_extract_proj = nn.Linear(cnn_dim, embed) if cnn_dim != embed else None
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.encoder = RefEncoder(config)
        self.layer_norm = nn.LayerNorm(cnn_dim)
        self.proj_head = nn.ModuleList(
            RefProjectionHead(embed, config.pred_head_final_dim) for _ in range(config.encoder_layers)
        )
        self.eval()

    def forward(self, source: Tensor, padding_mask: Optional[Tensor] = None) -> tuple[list[Tensor], list[Tensor]]:
        """(B, S) waves (+ optional (B, T) frame padding mask) -> (projections, layer results).

        Both lists are batch-first: N x (B, T, D) head outputs (what the S3PRL expert
        exposes) and N x (B, T, E) layer outputs.
        """
        features = self.feature_extractor(source)
        features = features.transpose(1, 2)
        features = self.layer_norm(features)
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        features = self.dropout_input(features)
        layer_results = self.encoder(features, padding_mask)
        projections = [head(result.transpose(0, 1)) for head, result in zip(self.proj_head, layer_results)]
        return projections, [result.transpose(0, 1) for result in layer_results]
