"""FitHuBERT: a thin, deep student that runs its layers at half the frame rate."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from recycle_distill.students.config import ConfigError, StudentConfig
from recycle_distill.students.blocks.heads import ProjectionHead, TimeReduction, TimeUpsampler
from recycle_distill.students.blocks.masks import conv_output_lengths, lengths_to_padding_mask
from recycle_distill.students.blocks.encoder import TransformerEncoder
from recycle_distill.students.blocks.table import PLAIN, BlockTable
from recycle_distill.students.model import StudentModel


class TimeReducingEncoder(TransformerEncoder):
    """Encoder with a strided Conv1d (``tr_layer``) between the positional conv and layer 1.

    The block table has no entry for it (tables key on exact plain classes), so it is the
    same class with the fast blocks; its positional conv and layers do take the table.
    """

    def __init__(self, config: StudentConfig, layers: list[nn.Module], blocks: BlockTable = PLAIN) -> None:
        super().__init__(config, layers, blocks)
        self.tr_layer = TimeReduction(config.encoder_embed_dim, config.tr_conv1d_kernel, config.tr_reduce_factor)

    def before_layers(self, x: Tensor, padding_mask: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """(B, T, E) -> (B, T', E) with the padding mask shortened by the same conv rule."""
        x = self.tr_layer(x)
        if padding_mask is not None:
            lengths = conv_output_lengths((~padding_mask).sum(1), [(self.tr_layer.kernel_size, self.tr_layer.factor)])
            padding_mask = lengths_to_padding_mask(lengths, x.shape[1])
        return x, padding_mask


class FitHuBERT(StudentModel):
    """Time-reduced student with the model's own upsampler and prediction heads on chosen layers.

    The S3PRL features are the N layer outputs brought back to the CNN frame rate by
    ``upsampler`` (ConvTranspose1d, a missing odd last frame repeats the one before).
    ``proj_head.k`` (own upsampler + Linear to ``pred_head_final_dim``) predicts the teacher's
    layer ``pred_layer_id[k]``. Training uses a head per layer (hint distillation); the
    published model keeps only the last one (``pred_layer_id: [11]``, 22.49M parameters).
    """

    family = "fithubert"

    def __init__(self, config: StudentConfig, blocks: BlockTable = PLAIN) -> None:
        if not config.enable_tr_layer:
            raise ConfigError("config key 'enable_tr_layer': FitHuBERT needs it true")
        super().__init__(config, blocks)
        self.upsampler = TimeUpsampler(config.encoder_embed_dim, config.tr_reduce_factor)

    def build_encoder(self, config: StudentConfig, blocks: BlockTable = PLAIN) -> TransformerEncoder:
        return TimeReducingEncoder(config, self.build_layers(config, blocks), blocks)

    def build_heads(self, config: StudentConfig) -> Optional[nn.ModuleList]:
        for layer in config.pred_layer_id:
            if not 0 <= layer < config.encoder_layers:
                raise ConfigError(f"config key 'pred_layer_id': layer {layer} is outside 0..{config.encoder_layers - 1}")
        return nn.ModuleList(
            ProjectionHead(config.encoder_embed_dim, config.pred_head_final_dim, config.tr_reduce_factor)
            for _ in config.pred_layer_id
        )

    def project(self, layer_results: list[Tensor], num_frames: int) -> Optional[list[Tensor]]:
        """One output per head, for layer ``pred_layer_id[k]``, at the CNN frame rate."""
        assert self.proj_head is not None
        return [head(layer_results[layer], num_frames) for head, layer in zip(self.proj_head, self.config.pred_layer_id)]

    def select_hidden_states(self, layer_results: list[Tensor], projections: Optional[list[Tensor]]) -> list[Tensor]:
        assert projections is not None
        num_frames = projections[0].shape[1]
        return [self.upsampler(result, num_frames) for result in layer_results]
