"""The ``layer_hints`` objective: the student's projection heads regress mapped teacher states.

Head k of the student (layer k for ARMHuBERT / MaskHuBERT; layer ``pred_layer_id[k]`` for
FitHuBERT) predicts the teacher target mapped to that layer (an encoder layer of a
model-class teacher, a ``hidden_states`` entry of an S3PRL upstream teacher). Loss: MSE per
head, hint heads weighted ``train.random_layer_weight`` (0.1), the last
``train.rec_loss_weight`` (1.0). No masking, so any teacher works, and the heads make any
teacher width work (``pred_head_final_dim`` = the teacher's width).
"""

from __future__ import annotations

from torch import nn

from recycle_distill.training.data.collate import AudioBatch
from recycle_distill.training.losses import fithubert_hint_loss
from recycle_distill.training.objectives import LossResult, Objective, float32_loss

__all__ = ["LayerHintsObjective"]


class LayerHintsObjective(Objective):
    """MSE of every projection head against its mapped teacher state (see module doc)."""

    def _head_layers(self, num_heads: int) -> list[int]:
        if self.config.family == "fithubert":
            return list(self.config.student.pred_layer_id)
        return list(range(num_heads))

    def _loss(self, student: nn.Module, teacher: nn.Module, batch: AudioBatch) -> LossResult:
        target = teacher(batch.waveforms, batch.lengths)
        student_out = student(batch.waveforms, batch.lengths)
        heads = student_out.projections
        if not heads:
            raise ValueError(f"layer_hints needs projection heads, which {self.config.family} lacks")
        targets = [target.layer_results[self.layer_mapping[layer]] for layer in self._head_layers(len(heads))]
        with float32_loss(batch):
            total, terms = fithubert_hint_loss(
                heads, targets, hint_weight=self.config.train.random_layer_weight,
                last_weight=self.config.train.rec_loss_weight,
                padding_mask=student_out.padding_mask if self.config.train.exclude_padding else None,
            )
        return LossResult(total, terms)

    def training_loss(self, student: nn.Module, teacher: nn.Module, batch: AudioBatch) -> LossResult:
        return self._loss(student, teacher, batch)

    def validation_loss(self, student: nn.Module, teacher: nn.Module, batch: AudioBatch) -> LossResult:
        return self._loss(student, teacher, batch)
