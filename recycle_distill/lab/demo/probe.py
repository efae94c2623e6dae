"""The demo's downstream comparison: one small probe on frozen features, voices held out.

SUPERB's recipe in miniature: a learned softmax-weighted sum of an upstream's layers, mean
pooling over time, a linear classifier. Features are pooled once per clip (the weighted sum
and the mean commute), standardised with the training fold's statistics so every upstream
gets the same well-conditioned optimisation, and the probe trains full-batch. Folds hold out
whole voices; every upstream sees the same folds and seeds, so differences can be paired.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = ["ProbeScores", "pool_features", "fbank_layers", "probe_accuracies", "paired_difference", "single_thread"]

Extractor = Callable[[Tensor], Sequence[Tensor]]  # (S,) wave -> L tensors (T, D)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread for many tiny ops (one clip, a small probe): on a busy 2-core
    machine two threads spend most of their time waiting on each other there (measured: a
    probe 17x slower with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class ProbeScores:
    """Test accuracies of one upstream: ``accuracies[fold][seed]``."""

    accuracies: list

    @property
    def per_fold(self) -> list[float]:
        return [sum(row) / len(row) for row in self.accuracies]

    @property
    def mean(self) -> float:
        folds = self.per_fold
        return sum(folds) / len(folds)

    @property
    def std(self) -> float:
        """Standard deviation over folds (sample, n - 1)."""
        folds = self.per_fold
        if len(folds) < 2:
            return 0.0
        mean = self.mean
        return math.sqrt(sum((a - mean) ** 2 for a in folds) / (len(folds) - 1))


def fbank_layers(wave: Tensor) -> list[Tensor]:
    """One "layer": (T, 80) log-mel filterbank, 25 ms windows every 10 ms (S3PRL's fbank)."""
    return [torchaudio.compliance.kaldi.fbank(wave.unsqueeze(0) * 32768, num_mel_bins=80, sample_frequency=SAMPLE_RATE,
                                              dither=0.0)]


@torch.no_grad()
def pool_features(extract: Extractor, waves: Sequence[Tensor]) -> Tensor:
    """(N, L, D): each clip's L layers (T, D) averaged over time."""
    pooled = []
    for wave in waves:
        layers = extract(wave)
        pooled.append(torch.stack([layer.reshape(-1, layer.shape[-1]).float().mean(dim=0) for layer in layers]))
    return torch.stack(pooled)


class _Probe(nn.Module):
    """Softmax layer weights over L pooled layers, then Linear(D, classes)."""

    def __init__(self, num_layers: int, dim: int, classes: int) -> None:
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(num_layers))
        self.linear = nn.Linear(dim, classes)

    def forward(self, features: Tensor) -> Tensor:
        """(B, L, D) -> (B, classes) logits."""
        weights = self.layer_weights.softmax(dim=0)
        return self.linear((features * weights[:, None]).sum(dim=1))


def probe_accuracies(features: Tensor, labels: Tensor, groups: Tensor, *, folds: int = 4, seeds: Sequence[int] = (0, 1),
                     steps: int = 300, lr: float = 1.0e-2, weight_decay: float = 1.0e-2) -> ProbeScores:
    """Train and test the probe on every (fold, seed).

    Args:
        features: (N, L, D) pooled features; labels: (N,) classes; groups: (N,) voice ids,
            group ``g`` is tested in fold ``g % folds``.
        steps: full-batch AdamW steps per probe.

    Returns:
        :class:`ProbeScores` with test accuracy per fold and seed.
    """
    if features.dim() != 3 or features.shape[0] != labels.shape[0] or groups.shape != labels.shape:
        raise ValueError(f"features (N, L, D) and labels/groups (N,) disagree: {tuple(features.shape)}, "
                         f"{tuple(labels.shape)}, {tuple(groups.shape)}")
    with single_thread():
        return ProbeScores(_cross_validate(features, labels, groups, folds, seeds, steps, lr, weight_decay))


def _cross_validate(features: Tensor, labels: Tensor, groups: Tensor, folds: int, seeds: Sequence[int], steps: int,
                    lr: float, weight_decay: float) -> list[list[float]]:
    classes = int(labels.max()) + 1
    scores = []
    for fold in range(folds):
        test = groups % folds == fold
        if not bool(test.any()) or bool(test.all()):
            raise ValueError(f"fold {fold} of {folds} has no test or no training clips")
        train_x, test_x = features[~test], features[test]
        mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        row = []
        for seed in seeds:
            torch.manual_seed(seed)
            probe = _Probe(features.shape[1], features.shape[2], classes)
            optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
            for _ in range(steps):
                loss = F.cross_entropy(probe(train_x), labels[~test])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                row.append(float((probe(test_x).argmax(dim=1) == labels[test]).float().mean()))
        scores.append(row)
    return scores


def paired_difference(a: ProbeScores, b: ProbeScores) -> tuple[float, float]:
    """Mean and standard error over folds of ``a - b`` (both scored on the same folds)."""
    diffs = [x - y for x, y in zip(a.per_fold, b.per_fold)]
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return mean, math.inf
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, math.sqrt(variance / len(diffs))
