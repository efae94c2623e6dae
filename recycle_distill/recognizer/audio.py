"""Recordings in: find them, read them as 16 kHz mono float32, batch them by length.

Reading never stops a run: a file ``soundfile`` cannot read, an empty one or one holding
NaN/inf becomes a :class:`Skipped` with the reason. Several channels are averaged and other
sample rates resampled (``torchaudio.functional.resample``), each noted in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from recycle_distill.util.messages import plain
from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = ["AUDIO_SUFFIXES", "DEFAULT_BATCH_SECONDS", "LIST_SUFFIXES", "MIN_SAMPLES", "AudioError", "Skipped",
           "check_wave", "collect_audio", "gather_recordings", "length_batches", "read_audio"]

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # what a folder is searched for (soundfile reads these)
LIST_SUFFIXES = (".txt", ".lst", ".list")  # an input with one of these is a list of recordings
DEFAULT_BATCH_SECONDS = 60.0  # padded audio per batch (count x longest recording)
MIN_SAMPLES = 400  # one 25 ms window: the receptive field of a HuBERT-style CNN front end


@dataclass(frozen=True)
class Skipped:
    """A recording left out and why (``unreadable: ...``, ``empty``, ``non-finite samples`` ...)."""

    source: str
    reason: str


class AudioError(ValueError):
    """A recording that cannot be transcribed (the message is the reason)."""


def _list_file(path: Path) -> list[Path]:
    """The recordings a list file names: one path per line, relative to the list's folder;
    blank lines and ``#`` comments skipped."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line)
            entries.append(entry if entry.is_absolute() else path.parent / entry)
    return entries


def collect_audio(inputs: Iterable[Union[str, Path]]) -> list[Path]:
    """Files as given, folders searched recursively for :data:`AUDIO_SUFFIXES` (sorted), list
    files (:data:`LIST_SUFFIXES`) expanded. A missing input is an error naming it."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found.extend(_list_file(path))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{plain(path)}: no such audio file, folder or list")
    return list(dict.fromkeys(found))


def check_wave(samples: np.ndarray) -> np.ndarray:
    """``samples`` as (S,) float32, or :class:`AudioError` when empty, too short or not finite."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise AudioError(f"expected a 1-D waveform, got shape {samples.shape}")
    if samples.size == 0:
        raise AudioError("empty")
    if samples.size < MIN_SAMPLES:
        raise AudioError(f"shorter than {MIN_SAMPLES} samples ({1000 * MIN_SAMPLES / SAMPLE_RATE:g} ms)")
    if not np.isfinite(samples).all():
        raise AudioError("non-finite samples (NaN or inf)")
    return samples


def read_audio(path: Union[str, Path]) -> np.ndarray:
    """(S,) float32 mono samples at 16 kHz; :class:`AudioError` saying why not."""
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (S, channels)
    except Exception as error:  # noqa: BLE001  (soundfile raises several types for unreadable files)
        raise AudioError(f"unreadable ({type(error).__name__}: {plain(str(error), 200)})") from None
    if samples.shape[1] > 1:
        logger.info("%s: %d channels mixed down to mono", plain(path), samples.shape[1])
        samples = samples.mean(axis=1, keepdims=True)
    samples = samples[:, 0]
    if samples.size and rate != SAMPLE_RATE:
        logger.info("%s: resampled from %d Hz to %d Hz", plain(path), rate, SAMPLE_RATE)
        samples = _resample(samples, rate)
    return check_wave(samples)


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    import torch
    import torchaudio.functional

    return torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, SAMPLE_RATE).numpy()


def length_batches(lengths: Sequence[int], max_samples: int) -> list[list[int]]:
    """Indices grouped longest first so that each batch's padded size (count x longest) stays
    within ``max_samples``; a recording longer than that is a batch of its own."""
    if max_samples < 1:
        raise ValueError(f"batch size must be at least one sample, got {max_samples}")
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_samples:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def gather_recordings(waves: Iterable[Any], skipped: Optional[list], as_array: Callable[[Any], np.ndarray] = np.asarray,
                      min_samples: int = 0) -> tuple[list[Optional[str]], list[np.ndarray]]:
    """The usable recordings of ``waves`` (paths are read, arrays checked) and their sources.

    A recording that cannot be used (unreadable, empty, shorter than ``MIN_SAMPLES`` or
    ``min_samples``, non-finite) is logged and appended to ``skipped`` as :class:`Skipped`.

    Returns:
        (sources, samples): for each usable recording, its path (None for an array) and its
        (S,) float32 samples at 16 kHz.
    """
    sources: list[Optional[str]] = []
    samples: list[np.ndarray] = []
    for number, wave in enumerate(waves):
        source = str(wave) if isinstance(wave, (str, Path)) else None
        try:
            wave = read_audio(wave) if source else check_wave(as_array(wave))
            if len(wave) < min_samples:
                raise AudioError(f"shorter than the upstream's receptive field ({len(wave)} < {min_samples} samples)")
            samples.append(wave)
            sources.append(source)
        except AudioError as error:
            logger.warning("skipped %s: %s", source or f"waveform {number}", error)
            if skipped is not None:
                skipped.append(Skipped(source or f"waveform {number}", str(error)))
    return sources, samples
