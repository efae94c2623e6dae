"""Duration-sorted batch sampler: utterances of similar duration share a batch (less padding).

Unlike the trainer's ``LengthBucketBatchSampler`` (``training/data/sampler.py``: shuffled pools
sorted by length in samples, a padded-size budget, distributed ranks, mid-epoch resume), this one
sorts the whole split by duration in seconds, caps a batch's total seconds, and serves one
process: what S3PRL's downstream runner needs.
"""

from __future__ import annotations

import logging
from typing import Iterator, Optional, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["DurationSortedBatchSampler"]

logger = logging.getLogger(__name__)


class DurationSortedBatchSampler(Sampler[list[int]]):
    """Batches of indices grouped by duration, reshuffled every epoch.

    Each epoch: a seeded random permutation, a stable sort by duration (so equal durations
    mix differently every epoch), consecutive runs cut into batches of at most ``batch_size``
    utterances and at most ``max_seconds`` of audio in total, then the batch order shuffled.
    With ``shuffle=False`` batches follow ascending duration, identically every epoch.

    An utterance longer than ``max_seconds`` on its own still forms a batch (logged once).

    Args:
        durations: seconds per dataset index.
        batch_size: most utterances per batch.
        max_seconds: most total seconds per batch, or None.
        shuffle: reshuffle per epoch.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        drop_last: drop a final batch smaller than ``batch_size`` (only without ``max_seconds``).
    """

    def __init__(self, durations: Sequence[float], batch_size: int, *, max_seconds: Optional[float] = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        self.durations = np.asarray(durations, dtype=np.float64)
        self.batch_size = batch_size
        self.max_seconds = max_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0  # the epoch the next iteration uses
        too_long = int((self.durations > max_seconds).sum()) if max_seconds is not None else 0
        if too_long:
            logger.warning("%d utterances are longer than max_seconds=%.1f: each forms a batch alone",
                           too_long, max_seconds)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order for the next iteration (each iteration then advances by one)."""
        self.epoch = epoch

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches of one epoch (deterministic given ``seed`` and ``epoch``)."""
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(len(self.durations)) if self.shuffle else np.arange(len(self.durations))
        order = order[np.argsort(self.durations[order], kind="stable")]
        batches: list[list[int]] = []
        current: list[int] = []
        seconds = 0.0
        for index in order.tolist():
            duration = float(self.durations[index])
            full = len(current) >= self.batch_size
            over = self.max_seconds is not None and current and seconds + duration > self.max_seconds
            if full or over:
                batches.append(current)
                current, seconds = [], 0.0
            current.append(index)
            seconds += duration
        if current and not (self.drop_last and self.max_seconds is None and len(current) < self.batch_size):
            batches.append(current)
        if self.shuffle:
            batches = [batches[number] for number in rng.permutation(len(batches)).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return iter(self.batches(epoch))

    def __len__(self) -> int:
        # Sorted durations are the same every epoch, so the packing (and the count) is too.
        return len(self.batches(self.epoch))
