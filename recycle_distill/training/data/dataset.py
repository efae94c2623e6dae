"""Waveform dataset over a manifest: float32 mono 16 kHz, optional seeded random crop.

Bad files never stop an epoch. A file that cannot be read, is not at the expected rate
(training never resamples), is not mono, or holds NaN/inf samples or samples beyond
:data:`MAX_ABS_SAMPLE` (float WAV can; one such file would turn every loss and weight into
NaN) makes ``__getitem__`` return ``None``; the collate drops it. Each such file is logged
once (with the reason) and counted in a flag tensor kept in shared memory, so the count and
the "warn once" rule hold across DataLoader worker processes and epochs, and
``dataset.skipped`` read in the main process sees skips made in the workers.

No more than ``max_samples`` samples are ever read from a file (a window at a seeded random
offset in training), whatever length its manifest claims; files read that way are counted
the same way (:attr:`AudioDataset.cropped`).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import soundfile
import torch
from torch import Tensor
from torch.utils.data import Dataset

from recycle_distill.util.sample_rate import SAMPLE_RATE
from recycle_distill.training.data.manifest import AudioEntry, ManifestError

logger = logging.getLogger(__name__)

__all__ = ["AudioDataset", "SKIP_REASONS", "MAX_ABS_SAMPLE", "format_counts"]

# Flag codes stored per entry (0 = fine or not read yet).
UNREADABLE, WRONG_RATE, NOT_MONO, EMPTY, NON_FINITE, OUT_OF_RANGE = 1, 2, 3, 4, 5, 6
SKIP_REASONS = {UNREADABLE: "unreadable", WRONG_RATE: "wrong sample rate", NOT_MONO: "not mono", EMPTY: "empty",
                NON_FINITE: "non-finite samples", OUT_OF_RANGE: "out-of-range samples"}

# Decoded integer PCM lies within [-1, 1]; a float file may hold anything. Beyond 1000 (60 dB over
# full scale) a sample is no recording's (a float file left at integer scale, or garbage): such
# values drive the CNN towards float16's limit (65504) and their squares, in the wave and layer
# normalisations, towards float32's; one such file would make non-finite losses.
MAX_ABS_SAMPLE = 1000.0

Item = tuple[Tensor, int]


class AudioDataset(Dataset):
    """Utterances of a manifest as 1-D float32 waveforms.

    ``dataset[i]`` is ``(waveform, i)`` with ``waveform`` of shape (T,), T <= ``max_samples``,
    or ``None`` when entry ``i`` is skipped (see module docstring).

    Args:
        entries: the manifest (a list of :class:`AudioEntry`).
        sample_rate: required rate; other rates are skipped, not resampled.
        max_samples: crop longer utterances to this many samples (None: no crop).
        random_crop: crop at a random offset (training) instead of from the start (eval).
            The offset is a function of (seed, epoch, index), so it does not depend on
            which worker reads the item; call :meth:`set_epoch` each epoch. With
            ``persistent_workers=True`` the workers keep the epoch they started with.
        seed: crop seed.
    """

    def __init__(
        self,
        entries: Sequence[AudioEntry],
        *,
        sample_rate: int = SAMPLE_RATE,
        max_samples: Optional[int] = None,
        random_crop: bool = True,
        seed: int = 0,
    ) -> None:
        if len(entries) == 0:
            source = getattr(entries, "source", "") or "the given entries"
            raise ManifestError(f"empty manifest: {source} has no audio files")
        if max_samples is not None and max_samples <= 0:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        self.entries = list(entries)
        self.sample_rate = sample_rate
        self.max_samples = max_samples
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0
        # Shared memory: forked (or spawned) workers write into the same storage.
        self._flags = torch.zeros(len(self.entries), dtype=torch.uint8).share_memory_()
        self._cropped = torch.zeros(len(self.entries), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def lengths(self) -> list[int]:
        """Per-entry length in samples after cropping (what the batch sampler buckets on)."""
        if self.max_samples is None:
            return [entry.num_samples for entry in self.entries]
        return [min(entry.num_samples, self.max_samples) for entry in self.entries]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random crops (call before iterating, like the sampler's)."""
        self.epoch = int(epoch)

    # ---- skip accounting -------------------------------------------------------------------

    @property
    def skipped(self) -> int:
        """How many distinct files have been skipped so far (all workers, all epochs)."""
        return int((self._flags > 0).sum())

    def skipped_files(self) -> dict[str, str]:
        """path -> reason for every skipped file."""
        flagged = torch.nonzero(self._flags, as_tuple=False).flatten().tolist()
        return {self.entries[i].path: SKIP_REASONS[int(self._flags[i])] for i in flagged}

    def skip_summary(self) -> dict[str, int]:
        """reason -> number of skipped files."""
        summary: dict[str, int] = {}
        for reason in self.skipped_files().values():
            summary[reason] = summary.get(reason, 0) + 1
        return summary

    @property
    def cropped(self) -> int:
        """How many distinct files were longer than ``max_samples`` when read (all workers, all epochs)."""
        return int((self._cropped > 0).sum())

    def log_skip_summary(self) -> None:
        """One warning with the skip counts, one line with the crop count (nothing when none)."""
        if self.skipped:
            logger.warning("skipped %d of %d files so far: %s", self.skipped, len(self), self.skip_summary())
        if self.cropped and self.max_samples is not None:
            seconds = f"{self.max_samples / self.sample_rate:g} s"
            logger.info("cropped %d of %d files longer than %s (train.max_audio_seconds) to a %s window",
                        self.cropped, len(self), seconds, seconds)

    def probe(self, limit: int = 32) -> tuple[int, int]:
        """Read up to ``limit`` files spread evenly over the manifest (all when fewer), as training
        would; returns (files read, files skipped). ``--check`` refuses a run when all are skipped."""
        count = min(limit, len(self))
        picked = sorted({int(i) for i in np.linspace(0, len(self) - 1, count).round()})
        skipped = sum(self[index] is None for index in picked)
        return len(picked), skipped

    def _skip(self, index: int, code: int, detail: str) -> None:
        # Check-then-set is not atomic across workers, but one index is read by one worker
        # per epoch, so a double warning needs the same file twice in one epoch.
        if int(self._flags[index]) == 0:
            self._flags[index] = code
            logger.warning("skipping %s: %s", self.entries[index].path, detail)

    # ---- reading -----------------------------------------------------------------------------

    def _crop(self, index: int, frames: int) -> tuple[int, int]:
        """(start, count) of the samples to read from a file of ``frames`` samples."""
        if self.max_samples is None or frames <= self.max_samples:
            return 0, frames
        if not self.random_crop:
            return 0, self.max_samples
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return int(rng.integers(0, frames - self.max_samples + 1)), self.max_samples

    def __getitem__(self, index: int) -> Optional[Item]:
        """``(waveform (T,) float32, index)``, or ``None`` for a skipped file."""
        index = int(index)
        if int(self._flags[index]) != 0:
            return None  # already known bad: do not reopen or warn again
        path = self.entries[index].path
        try:
            with soundfile.SoundFile(path) as audio:
                if audio.samplerate != self.sample_rate:
                    self._skip(
                        index, WRONG_RATE,
                        f"sample rate {audio.samplerate} Hz, expected {self.sample_rate} Hz "
                        "(training does not resample; convert the file offline)",
                    )
                    return None
                if audio.channels != 1:
                    self._skip(index, NOT_MONO, f"{audio.channels} channels, expected mono")
                    return None
                start, count = self._crop(index, audio.frames)
                if count < audio.frames:
                    self._cropped[index] = 1
                if start:
                    audio.seek(start)
                # Never more than the window, whatever the manifest said about the length.
                samples = audio.read(count, dtype="float32", always_2d=False)
        except Exception as error:  # any decoder error means this file is unusable, not the epoch
            self._skip(index, UNREADABLE, f"unreadable ({type(error).__name__}: {error})")
            return None
        if samples.size == 0:
            self._skip(index, EMPTY, "no samples")
            return None
        finite = np.isfinite(samples)
        if not finite.all():
            self._skip(index, NON_FINITE, f"{int(samples.size - finite.sum())} of {samples.size} samples "
                                          "are NaN or infinite")
            return None
        magnitude = np.abs(samples)
        beyond = magnitude > MAX_ABS_SAMPLE
        if beyond.any():
            self._skip(index, OUT_OF_RANGE, f"{int(beyond.sum())} of {samples.size} samples are out of range "
                                            f"(|x| > {MAX_ABS_SAMPLE:g}, largest {float(magnitude.max()):g}); "
                                            "audio lies within [-1, 1]")
            return None
        return torch.from_numpy(np.ascontiguousarray(samples)), index


def format_counts(summary: dict[str, int]) -> str:
    """``wrong sample rate: 3, unreadable: 1`` (most frequent first) for messages."""
    ordered = sorted(summary.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{reason}: {count}" for reason, count in ordered)
