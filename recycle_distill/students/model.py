"""The student skeleton every family shares: CNN front end, encoder, optional heads.

A family subclasses :class:`StudentModel` and overrides the block builders
(:meth:`build_layers`, :meth:`build_encoder`, :meth:`build_heads`) and
:meth:`hidden_states`; nothing else differs between families. The builders hand the block
table (:mod:`recycle_distill.students.blocks.table`) down, so one argument chooses the plain
blocks or the fast CPU inference ones for the whole model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from recycle_distill.students.config import StudentConfig
from recycle_distill.students.blocks.feature_extractor import ConvFeatureExtractor
from recycle_distill.students.key_layout import rename_keys, to_module_key, to_released_key
from recycle_distill.students.blocks.grad import grad_multiply
from recycle_distill.students.blocks.heads import ProjectionHead
from recycle_distill.students.blocks.masks import conv_output_lengths, lengths_to_padding_mask, optional_mask
from recycle_distill.students.blocks.table import PLAIN, BlockTable
from recycle_distill.students.blocks.transformer_layer import TransformerLayer
from recycle_distill.students.blocks.encoder import TransformerEncoder


@dataclass
class StudentOutput:
    """What a student returns (all batch-first).

    Attributes:
        hidden_states: the N tensors the S3PRL expert exposes, each (B, T, D).
        layer_results: the N transformer layer outputs, each (B, T', E).
        projections: the N head outputs (B, T, D) for families with heads, else None.
        padding_mask: (B, T) frame mask, True = padding, or None when nothing is padded.
        features: (B, T, E) encoder input after projection and masking.
        encoder_input: (B, T, E) first layer's input (after positional conv and LayerNorm).
    """

    hidden_states: list[Tensor]
    layer_results: list[Tensor]
    projections: Optional[list[Tensor]]
    padding_mask: Optional[Tensor]
    features: Tensor
    encoder_input: Optional[Tensor] = None

    @property
    def last_hidden_state(self) -> Tensor:
        return self.hidden_states[-1]


def _to_released_layout(module: nn.Module, state_dict, prefix: str, local_metadata) -> None:
    rename_keys(state_dict, prefix, to_released_key)


def _from_released_layout(module: nn.Module, state_dict, prefix: str, *args) -> None:
    rename_keys(state_dict, prefix, to_module_key)


class StudentModel(nn.Module):
    """Shared student: ``CNN -> LayerNorm -> [proj] -> [mask_emb] -> encoder -> [heads]``.

    Args:
        config: a validated :class:`StudentConfig`.
        blocks: the block table: :data:`~recycle_distill.students.blocks.table.PLAIN` (default)
            or the fast CPU inference blocks (``build_student(..., blocks="fast")``).
    """

    family = "student"
    has_mask_embedding = True
    always_builds_padding_mask = False

    def __init__(self, config: StudentConfig, blocks: BlockTable = PLAIN) -> None:
        super().__init__()
        self.config = config
        cnn_dim, embed_dim = config.cnn_output_dim, config.encoder_embed_dim
        if self.has_mask_embedding:
            self.mask_emb = nn.Parameter(torch.empty(embed_dim).uniform_())
        self.feature_extractor = blocks.get(ConvFeatureExtractor, ConvFeatureExtractor)(
            config.conv_feature_layers, config.conv_bias)
        self.post_extract_proj = nn.Linear(cnn_dim, embed_dim) if cnn_dim != embed_dim else None
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.encoder = self.build_encoder(config, blocks)
        self.layer_norm = nn.LayerNorm(cnn_dim)
        self.proj_head = self.build_heads(config)
        # state_dict() speaks the released checkpoints' key layout; loading accepts it.
        self.register_state_dict_post_hook(_to_released_layout)
        self.register_load_state_dict_pre_hook(_from_released_layout)

    # ---------------------------------------------------------------- blocks
    def build_layers(self, config: StudentConfig, blocks: BlockTable = PLAIN) -> list[nn.Module]:
        """N full-attention post-LN layers."""
        return [self.full_attention_layer(config, blocks) for _ in range(config.encoder_layers)]

    @staticmethod
    def full_attention_layer(config: StudentConfig, blocks: BlockTable = PLAIN) -> TransformerLayer:
        return TransformerLayer(
            config.encoder_embed_dim,
            config.encoder_ffn_embed_dim,
            config.encoder_attention_heads,
            config.dropout,
            config.attention_dropout,
            config.activation_dropout,
            blocks=blocks,
        )

    def build_encoder(self, config: StudentConfig, blocks: BlockTable = PLAIN) -> TransformerEncoder:
        return blocks.get(TransformerEncoder, TransformerEncoder)(config, self.build_layers(config, blocks), blocks)

    def build_heads(self, config: StudentConfig) -> Optional[nn.ModuleList]:
        """One Linear(E, pred_head_final_dim) head per layer."""
        return nn.ModuleList(
            ProjectionHead(config.encoder_embed_dim, config.pred_head_final_dim) for _ in range(config.encoder_layers)
        )

    def select_hidden_states(self, layer_results: list[Tensor], projections: Optional[list[Tensor]]) -> list[Tensor]:
        """What the S3PRL expert exposes: the head projections here."""
        assert projections is not None
        return projections

    # ---------------------------------------------------------------- forward
    @property
    def receptive_field(self) -> int:
        """Samples needed for one frame (400 for every released CNN)."""
        return self.feature_extractor.receptive_field

    @property
    def downsample_rate(self) -> int:
        """Samples per frame of ``hidden_states``: the product of the CNN strides (320 for every
        released CNN; FitHuBERT's upsampler brings its states back to this rate)."""
        return math.prod(stride for _, stride in self.feature_extractor.kernel_strides)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) sample counts -> (B,) frame counts of the CNN."""
        return conv_output_lengths(lengths, self.feature_extractor.kernel_strides)

    def forward(
        self,
        waveforms: Tensor,
        lengths: Optional[Tensor] = None,
        mask_indices: Optional[Tensor] = None,
    ) -> StudentOutput:
        """Run the student.

        Args:
            waveforms: (B, S) right-padded float waveforms.
            lengths: (B,) valid samples per row, or None when nothing is padded.
            mask_indices: (B, T) bool frames to replace by ``mask_emb`` (any mode).

        Returns:
            :class:`StudentOutput`.
        """
        features = self._cnn(waveforms, lengths).transpose(1, 2)
        features = self.layer_norm(features)
        padding_mask = self._frame_padding_mask(features, lengths)

        crop = features.shape[1] % self.config.crop_seq_to_multiple
        if crop:
            features = features[:, :-crop]
            padding_mask = padding_mask[:, :-crop] if padding_mask is not None else None
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        features = self.dropout_input(features)
        if mask_indices is not None:
            features = self._apply_mask(features, mask_indices)

        layer_results, _, encoder_input = self.encoder(features, padding_mask)
        projections = self.project(layer_results, features.shape[1])
        return StudentOutput(
            hidden_states=self.select_hidden_states(layer_results, projections),
            layer_results=layer_results,
            projections=projections,
            padding_mask=padding_mask,
            features=features,
            encoder_input=encoder_input,
        )

    def project(self, layer_results: list[Tensor], num_frames: int) -> Optional[list[Tensor]]:
        """Apply head i to layer i's output (None for families without heads)."""
        if self.proj_head is None:
            return None
        return [head(result, num_frames) for head, result in zip(self.proj_head, layer_results)]

    def _cnn(self, waveforms: Tensor, lengths: Optional[Tensor]) -> Tensor:
        """(B, S) -> (B, C, T), honouring ``feature_grad_mult`` and ``per_utterance_cnn``."""
        mult = self.config.feature_grad_mult
        if mult == 0:
            with torch.no_grad():
                return self._run_cnn(waveforms, lengths)
        return grad_multiply(self._run_cnn(waveforms, lengths), mult)

    def _run_cnn(self, waveforms: Tensor, lengths: Optional[Tensor]) -> Tensor:
        if not self.config.per_utterance_cnn or lengths is None:
            return self.feature_extractor(waveforms)
        # GroupNorm normalises over the whole padded time axis; running each utterance alone
        # makes batched features equal single-utterance ones.
        full = self.feature_extractor(waveforms[:1, : int(lengths[0])])
        num_frames = int(self.frame_lengths(torch.tensor([waveforms.shape[1]]))[0])
        out = full.new_zeros(waveforms.shape[0], full.shape[1], num_frames)
        for index in range(waveforms.shape[0]):
            single = full if index == 0 else self.feature_extractor(waveforms[index : index + 1, : int(lengths[index])])
            out[index, :, : single.shape[-1]] = single[0]
        return out

    def _frame_padding_mask(self, features: Tensor, lengths: Optional[Tensor]) -> Optional[Tensor]:
        batch, num_frames = features.shape[:2]
        if lengths is None:
            mask = torch.zeros(batch, num_frames, dtype=torch.bool, device=features.device)
        else:
            mask = lengths_to_padding_mask(self.frame_lengths(lengths.to(features.device)), num_frames)
        return optional_mask(mask, self.always_builds_padding_mask)

    def _apply_mask(self, features: Tensor, mask_indices: Tensor) -> Tensor:
        if not self.has_mask_embedding:
            raise ValueError(f"{self.family} has no mask embedding; it cannot take mask_indices")
        if mask_indices.shape != features.shape[:2]:
            raise ValueError(
                f"mask_indices has shape {tuple(mask_indices.shape)}, expected (B, T) = {tuple(features.shape[:2])}"
            )
        return torch.where(mask_indices.unsqueeze(-1), self.mask_emb.to(features.dtype), features)
