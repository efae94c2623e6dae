"""Representation transfer: how close a student's layers are to the teacher layers they learn from.

For every distilled layer i, the student's ``hidden_states[i]`` (the head outputs of
ARMHuBERT / MaskHuBERT / FitHuBERT, the layer outputs of STaRHuBERT) is compared with teacher
layer ``mapping[i]`` on held-out utterances, all frames pooled: linear CKA, and the mean
cosine of paired frame vectors where the widths agree. The log-mel input gets the same CKA as
a floor: how much of a teacher layer any input-driven representation already shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torchaudio
from torch import Tensor

from recycle_distill.lab.analysis.similarity import linear_cka, mean_frame_cosine
from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = ["TransferScores", "FrameMatrices", "teacher_outputs", "frame_matrices", "measure_transfer", "fbank_frames"]


@dataclass
class TransferScores:
    """Per distilled layer: CKA and mean frame cosine (None where widths differ) of the student,
    and the CKA of the log-mel input with the same teacher layer."""

    teacher_layers: list = field(default_factory=list)
    cka: list = field(default_factory=list)
    cosine: list = field(default_factory=list)
    fbank_cka: list = field(default_factory=list)


def fbank_frames(wave: Tensor) -> Tensor:
    """(T, 80) log-mel on the teacher's grid (25 ms windows every 20 ms, no edge padding)."""
    return torchaudio.compliance.kaldi.fbank(wave.unsqueeze(0) * 32768, num_mel_bins=80, sample_frequency=SAMPLE_RATE,
                                             frame_length=25.0, frame_shift=20.0, dither=0.0)


def _align(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Cut (T_s, D) and (T_t, E) to the same frames; a time-reduced student averages teacher frames."""
    factor = max(1, round(teacher.shape[0] / student.shape[0]))
    if factor > 1:
        frames = teacher.shape[0] // factor
        teacher = teacher[: frames * factor].reshape(frames, factor, -1).mean(dim=1)
    frames = min(student.shape[0], teacher.shape[0])
    return student[:frames], teacher[:frames]


@dataclass
class FrameMatrices:
    """Frames of all held-out utterances, pooled (F rows each).

    Attributes:
        student: N student (F, D) matrices; ``paired_teacher``: the N mapped teacher layers
            (F, E) on the same frames (averaged over the time-reduction factor if any).
        teacher: every teacher layer (F', E) on its own grid; ``fbank``: (F', 80) log-mel.
    """

    student: list
    paired_teacher: list
    teacher: list
    fbank: Tensor


@torch.no_grad()
def teacher_outputs(teacher, waves: Sequence[Tensor]) -> list[list[Tensor]]:
    """Per (S_i,) utterance (one at a time, no padding), the teacher's L layer outputs (T_i, E)."""
    return [[layer[0] for layer in teacher(wave.unsqueeze(0)).layer_results] for wave in waves]


@torch.no_grad()
def frame_matrices(targets: Sequence[list], student, waves: Sequence[Tensor], mapping: Sequence[int]) -> FrameMatrices:
    """Run the student on each (S_i,) 16 kHz utterance and pool its frames with the teacher's.

    ``targets`` is :func:`teacher_outputs` of the same waves; ``mapping`` holds the 0-based
    teacher layer of each student hidden state.
    """
    students: list[list[Tensor]] = [[] for _ in mapping]
    paired: list[list[Tensor]] = [[] for _ in mapping]
    native: list[list[Tensor]] = []
    fbanks: list[Tensor] = []
    for wave, target in zip(waves, targets):
        hidden = student(wave.unsqueeze(0)).hidden_states
        pairs = [_align(hidden[index][0], target[layer]) for index, layer in enumerate(mapping)]
        frames = min(s.shape[0] for s, _ in pairs)
        for index, (s, t) in enumerate(pairs):
            students[index].append(s[:frames])
            paired[index].append(t[:frames])
        fbank = fbank_frames(wave)
        frames = min(fbank.shape[0], target[0].shape[0])
        fbanks.append(fbank[:frames])
        native = native or [[] for _ in target]
        for layer, output in enumerate(target):
            native[layer].append(output[:frames])
    return FrameMatrices([torch.cat(s) for s in students], [torch.cat(t) for t in paired],
                         [torch.cat(t) for t in native], torch.cat(fbanks))


def measure_transfer(frames: FrameMatrices, mapping: Sequence[int]) -> TransferScores:
    """CKA and cosine of each student hidden state with its mapped teacher layer, and the fbank floor."""
    scores = TransferScores(teacher_layers=list(mapping))
    for s, t in zip(frames.student, frames.paired_teacher):
        scores.cka.append(linear_cka(s, t))
        scores.cosine.append(mean_frame_cosine(s, t) if s.shape[1] == t.shape[1] else None)
    scores.fbank_cka = [linear_cka(frames.fbank, frames.teacher[layer]) for layer in mapping]
    return scores
