"""The training objectives as modules: each turns (student, teacher, batch) into a loss.

* :class:`MaskingObjective` (MaskHuBERT / ARMHuBERT): the teacher runs on masked and unmasked
  copies of the batch (one CNN pass, one 2B transformer pass), the student on the masked copy;
  :func:`recycle_distill.training.losses.masking_distillation_loss` pairs them.
* :class:`StarObjective` (STaRHuBERT): temporal Gram matrices of layer outputs, no masking.
* :class:`FitHuBERTObjective`: per-layer hints from the heads of a time-reduced student.
* :class:`LayerHintsObjective`: the projection heads regress mapped teacher states (any teacher).

Each validation loss runs both models without masking. The losses run with autocast off
(:func:`float32_loss`): under ``train.precision`` bf16/fp16 the models run in reduced precision
but every loss, STaR's Gram matmuls included, is computed in float32.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from recycle_distill import families
from recycle_distill.training.data.collate import AudioBatch
from recycle_distill.training.losses import (
    fithubert_hint_loss,
    masking_distillation_loss,
    star_loss,
    validation_loss,
)
from recycle_distill.students import StudentModel
from recycle_distill.training.teacher import Teacher
from recycle_distill.training.teacher.span_masks import SpanMaskConfig
from recycle_distill.training.config import TrainConfig

__all__ = ["Objective", "OBJECTIVE_CLASSES", "LayerHintsObjective", "build_objective", "float32_loss", "sample_hint_layers", "utterance_seed"]


def utterance_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one utterance's mask, independent of batching, rank and workers."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def sample_hint_layers(num_layers: int, count: int, seed: int, epoch: int) -> list[int]:
    """``count`` of the ``num_layers - 1`` lower layers, resampled each epoch (sorted)."""
    rng = random.Random(f"hint-layers/{seed}/{epoch}")
    return sorted(rng.sample(range(num_layers - 1), count))


def float32_loss(batch: AudioBatch) -> torch.autocast:
    """Autocast off while a loss is computed: the losses upcast their inputs to float32 and
    their matmuls (STaR's Gram matrices) must not drop back to bf16/fp16. A no-op in fp32 runs."""
    return torch.autocast(device_type=batch.waveforms.device.type, enabled=False)


@dataclass
class LossResult:
    total: Tensor
    terms: dict[str, Tensor]


class Objective(nn.Module):
    """Base: holds the layer mapping and the hint-layer subset of the current epoch."""

    def __init__(self, config: TrainConfig, layer_mapping: list[int]) -> None:
        super().__init__()
        self.config = config
        self.layer_mapping = layer_mapping
        self.hint_layers: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        train = self.config.train
        self.epoch = epoch
        self.hint_layers = sample_hint_layers(
            self.config.student.encoder_layers, train.distil_random_layer, train.seed, epoch
        )

    def mapped(self, teacher_layers: list[Tensor]) -> list[Tensor]:
        return [teacher_layers[index] for index in self.layer_mapping]

    def training_loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        raise NotImplementedError

    def validation_loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        raise NotImplementedError


class MaskingObjective(Objective):
    """Masking distillation: masked frames learn the unmasked teacher, unmasked ones the masked."""

    def mask_indices(self, teacher: Teacher, batch: AudioBatch) -> Tensor:
        """(B, T) span masks on the teacher's grid, one RNG stream per utterance."""
        teacher_cfg = self.config.teacher
        mask_config = SpanMaskConfig(
            mask_prob=teacher_cfg.mask_prob, mask_length=teacher_cfg.mask_length,
            selection=teacher_cfg.mask_selection, other=teacher_cfg.mask_other,
            no_overlap=teacher_cfg.no_mask_overlap, min_space=teacher_cfg.mask_min_space,
        )
        waveforms = batch.waveforms
        padding = teacher.frame_padding_mask(batch.lengths, waveforms.shape[1])
        rows = []
        for row, index in enumerate(batch.indices.tolist()):
            # Per-utterance streams make masks independent of batch composition: DDP ranks and
            # an interrupted-then-resumed run draw exactly what a single process would.
            generator = np.random.RandomState(utterance_seed(self.config.train.seed, self.epoch, index))
            rows.append(teacher.compute_mask_indices(padding[row : row + 1], config=mask_config, generator=generator))
        return torch.cat(rows).to(waveforms.device)

    def training_loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        mask = self.mask_indices(teacher, batch)
        masked, unmasked = teacher.forward_masked_and_unmasked(batch.waveforms, batch.lengths, mask)
        student_out = student(batch.waveforms, batch.lengths, mask_indices=mask[:, : _student_frames(student, batch)])
        with float32_loss(batch):
            total, terms = masking_distillation_loss(
                student_out.projections,
                self.mapped(unmasked.layer_results),
                self.mapped(masked.layer_results),
                mask,
                self.hint_layers,
                hint_weight=self.config.train.random_layer_weight,
                last_weight=self.config.train.rec_loss_weight,
                padding_mask=student_out.padding_mask if self.config.train.exclude_padding else None,
            )
        return LossResult(total, terms)

    def validation_loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        target = teacher(batch.waveforms, batch.lengths)
        student_out = student(batch.waveforms, batch.lengths)
        with float32_loss(batch):
            total, terms = validation_loss(
                student_out.projections, self.mapped(target.layer_results), self.hint_layers,
                hint_weight=self.config.train.random_layer_weight, last_weight=self.config.train.rec_loss_weight,
                padding_mask=student_out.padding_mask if self.config.train.exclude_padding else None,
            )
        return LossResult(total, terms)


class StarObjective(Objective):
    """STaR: layer-wise and intra-layer temporal Gram matrices (no heads, no masking)."""

    def _loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        target, teacher_input = _teacher_with_encoder_input(teacher, batch)
        student_out = student(batch.waveforms, batch.lengths)
        mapping = self.layer_mapping
        # Teacher input of mapped layer m is the output of layer m - 1 (the encoder input for m = 0).
        teacher_inputs = [teacher_input if m == 0 else target.layer_results[m - 1] for m in mapping]
        student_inputs = [student_out.encoder_input] + student_out.layer_results[:-1]
        with float32_loss(batch):
            total, terms = star_loss(
                student_out.layer_results, self.mapped(target.layer_results),
                student_inputs=student_inputs, teacher_inputs=teacher_inputs,
                padding_mask=student_out.padding_mask, normalization=self.config.train.star_normalization,
            )
        return LossResult(total, terms)

    def training_loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        return self._loss(student, teacher, batch)

    def validation_loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        return self._loss(student, teacher, batch)


class FitHuBERTObjective(Objective):
    """FitHuBERT hints: head k predicts teacher layer ``pred_layer_id[k]``; last x1.0, others x0.1."""

    def _loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        target = teacher(batch.waveforms, batch.lengths)
        student_out = student(batch.waveforms, batch.lengths)
        layers = self.config.student.pred_layer_id
        teacher_layers = [target.layer_results[self.layer_mapping[layer]] for layer in layers]
        with float32_loss(batch):
            total, terms = fithubert_hint_loss(
                student_out.projections, teacher_layers, hint_weight=self.config.train.random_layer_weight,
                last_weight=self.config.train.rec_loss_weight,
                padding_mask=student_out.padding_mask if self.config.train.exclude_padding else None,
            )
        return LossResult(total, terms)

    def training_loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        return self._loss(student, teacher, batch)

    def validation_loss(self, student: nn.Module, teacher: Teacher, batch: AudioBatch) -> LossResult:
        return self._loss(student, teacher, batch)


class LayerHintsObjective(Objective):
    """``layer_hints``: the student's projection heads regress mapped teacher states.

    Head k of the student (layer k for ARMHuBERT / MaskHuBERT; layer ``pred_layer_id[k]`` for
    FitHuBERT) predicts the teacher target mapped to that layer (an encoder layer of a
    model-class teacher, a ``hidden_states`` entry of an S3PRL upstream teacher). Loss: MSE per
    head, hint heads weighted ``train.random_layer_weight`` (0.1), the last
    ``train.rec_loss_weight`` (1.0). No masking, so any teacher works, and the heads make any
    teacher width work (``pred_head_final_dim`` = the teacher's width).
    """

    def _head_layers(self, num_heads: int) -> list[int]:
        if families.family(self.config.family).time_reduction:  # FitHuBERT: heads sit on chosen layers
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


# train.objective -> its class
OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    "masking": MaskingObjective, "star": StarObjective, "fithubert": FitHuBERTObjective,
    "layer_hints": LayerHintsObjective,
}


def build_objective(config: TrainConfig, layer_mapping: list[int]) -> Objective:
    return OBJECTIVE_CLASSES[config.objective](config, layer_mapping)


def _student_frames(student: nn.Module, batch: AudioBatch) -> int:
    """T of the student for this batch (conv rule, then crop_seq_to_multiple)."""
    model: StudentModel = getattr(student, "module", student)
    frames = int(model.frame_lengths(torch.tensor([batch.waveforms.shape[1]]))[0])
    return frames - frames % model.config.crop_seq_to_multiple


def _teacher_with_encoder_input(teacher: Teacher, batch: AudioBatch):
    """Teacher outputs plus its first layer's input (B, T, D), read from the teacher's output."""
    target = teacher(batch.waveforms, batch.lengths)
    if getattr(teacher, "kind", None) == "upstream":
        # An S3PRL upstream teacher: state m's input is state m - 1; state 0 stands for its own.
        return target, target.layer_results[0]
    return target, target.encoder_input
