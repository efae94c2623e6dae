"""A tiny CIF recognizer with random weights on the tiny ARMHuBERT test student, and the PyTorch
path S3PRL takes through it, for the ONNX recognizer tests (equality needs no training).

The reference path is the one an experiment runs: the student on the right-padded batch, S3PRL's
featurizer (softmax-weighted sum of the hidden states, ``round(samples / rate)`` frames), then
:meth:`CifRecognizer.recognize` (encoder, CIF, beam search).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recycle_distill.downstreams.cif_asr.config import DecodeConfig, LossConfig, ModelConfig
from recycle_distill.downstreams.cif_asr.model import CifRecognizer
from recycle_distill.downstreams.cif_asr.text import SPECIALS, UnitVocabulary

from helpers.tiny_students import tiny_student

FAMILY = "armhubert"
MODEL = dict(d_model=32, conformer_layers=1, conformer_ffn=64, conformer_kernel=7, predictor_channels=32,
             decoder_ffn=64, decoder_heads=4)
UNITS = ("a", "b", "c", "d", "e", "f")


@dataclass
class TinyRecognizer:
    student: nn.Module
    layer_weights: torch.Tensor  # (N,) after the softmax
    model: CifRecognizer
    vocab: UnitVocabulary
    family: str = FAMILY


def tiny_recognizer(seed: int = 0) -> TinyRecognizer:
    """The tiny student (fixture weights), random featurizer weights and a random recognizer (eval)."""
    torch.manual_seed(seed)
    student = tiny_student(FAMILY)
    with torch.no_grad():
        states = student(torch.zeros(1, 16000)).hidden_states
    vocab = UnitVocabulary(units=[*SPECIALS, *UNITS], lm_ids=list(range(len(SPECIALS) + len(UNITS))),
                           language="en", fingerprint="tiny-random")
    model = CifRecognizer(ModelConfig(**MODEL), LossConfig(), states[0].shape[-1], student.downsample_rate,
                          len(vocab)).eval()
    return TinyRecognizer(student, torch.softmax(torch.randn(len(states)), dim=0), model, vocab)


def noise_waves(lengths, seed: int = 0) -> list[np.ndarray]:
    """Gaussian noise (scale 0.1) of the given sample counts, float32."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in lengths]


@torch.no_grad()
def reference_batch(tiny: TinyRecognizer, waves: list[np.ndarray], decode: DecodeConfig, normalize: bool = False):
    """The PyTorch path on one padded batch: (hypotheses, alpha (B, T'), encoder frames (B,),
    CIF vectors (B, N, d), CIF lengths (B,)); ``normalize``: S3PRL's layer norm of each state."""
    from recycle_distill.downstreams.cif_asr.cif import continuous_integrate_and_fire

    lengths = [len(w) for w in waves]
    batch = torch.zeros(len(waves), max(lengths))
    for row, wave in enumerate(waves):
        batch[row, : len(wave)] = torch.from_numpy(wave)
    output = tiny.student(batch, torch.tensor(lengths))
    stacked = torch.stack(output.hidden_states)
    if normalize:
        stacked = torch.nn.functional.layer_norm(stacked, (stacked.shape[-1],))
    features = (tiny.layer_weights.view(-1, 1, 1, 1) * stacked).sum(0)
    rate = tiny.student.downsample_rate
    feature_lengths = torch.tensor([min(round(n / rate), features.shape[1]) for n in lengths])
    hypotheses, alpha, frames = tiny.model.recognize(features, feature_lengths, decode)
    hidden, padding, _, alpha2 = tiny.model.encode(features, feature_lengths)
    cif = continuous_integrate_and_fire(hidden, alpha2, padding, threshold=tiny.model.model_cfg.cif_threshold,
                                        tail_threshold=decode.tail_threshold)
    return hypotheses, alpha, frames, cif.fired, cif.fired_lengths
