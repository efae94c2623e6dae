"""ARMHuBERT: MaskHuBERT whose odd layers reuse the previous layer's attention map."""

from __future__ import annotations

from torch import nn

from recycle_distill.students.config import ConfigError, StudentConfig
from recycle_distill.students.blocks.table import PLAIN, BlockTable
from recycle_distill.students.blocks.transformer_layer import ReuseTransformerLayer
from recycle_distill.students.model import StudentModel


class ARMHuBERT(StudentModel):
    """Attention-map-reusing student: ``reuse_pattern[i]`` False swaps layer i for a reuse layer."""

    family = "armhubert"

    def build_layers(self, config: StudentConfig, blocks: BlockTable = PLAIN) -> list[nn.Module]:
        if config.reuse_pattern is None:
            raise ConfigError("config key 'reuse_pattern': ARMHuBERT needs one (e.g. [True, False] * 6)")
        return [
            self.full_attention_layer(config, blocks) if computes_attention else self.reuse_layer(config, blocks)
            for computes_attention in config.reuse_pattern
        ]

    @staticmethod
    def reuse_layer(config: StudentConfig, blocks: BlockTable = PLAIN) -> ReuseTransformerLayer:
        return ReuseTransformerLayer(
            config.encoder_embed_dim,
            config.encoder_ffn_embed_dim,
            config.encoder_attention_heads,
            config.dropout,
            config.activation_dropout,
            pair_like_reference=config.reference_batched_reuse,
            blocks=blocks,
        )
