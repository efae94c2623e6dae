"""Tiny multi-speaker LibriSpeech-layout corpora for tests and the demo.

Speech comes from espeak-ng (one voice variant + pitch + rate per speaker, random sentences
from a built-in word list), resampled 22 050 -> 16 000 Hz. Without espeak-ng a synthetic
harmonic "voice" per speaker is used instead, with a loud warning: it has speaker-like
pitch and syllable-like bursts but is not speech, so nothing trained on it means much.

Layout written (as LibriSpeech)::

    <root>/<subset>/<spk>/<chap>/<spk>-<chap>-<utt>.flac     16 kHz mono FLAC
    <root>/<subset>/<spk>/<chap>/<spk>-<chap>.trans.txt      "<utt id> <UPPERCASE TEXT>"
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import soundfile

from recycle_distill.util.sample_rate import SAMPLE_RATE as _SAMPLE_RATE
from recycle_distill.training.data.manifest import write_len_for_bucket
from recycle_distill.training.data.scan import scan_librispeech

logger = logging.getLogger(__name__)

__all__ = [
    "TinyCorpusInfo", "make_tiny_librispeech", "make_len_for_bucket", "espeak_available", "speak",
    "warn_no_espeak",
]

PathLike = Union[str, os.PathLike]

SAMPLE_RATE = _SAMPLE_RATE  # re-exported for the callers of this module
ESPEAK_RATE = 22050
NO_ESPEAK_ENV = "RECYCLE_DISTILL_NO_ESPEAK"

# espeak-ng voice variants (language + "+variant"); mbrola voices are avoided (extra packages).
VOICES = (
    "en-us+m1", "en-us+f2", "en+m3", "en-gb+f3", "en-us+m4", "en-gb-scotland+f1",
    "en+m7", "en-us+f4", "en-gb-x-rp+m2", "en+f5", "en-us+m6", "en-gb+m8",
)
WORDS = (
    "the", "a", "cat", "dog", "sat", "ran", "on", "mat", "big", "small", "red", "blue", "green",
    "house", "tree", "river", "stone", "light", "night", "morning", "speech", "model", "voice",
    "open", "close", "door", "window", "table", "chair", "bread", "water", "tea", "apple", "turn",
    "left", "right", "stop", "go", "slowly", "quickly", "today", "tomorrow", "we", "they", "she",
    "he", "walked", "talked", "heard", "saw", "found", "little", "old", "new", "road", "city",
    "garden", "music", "paper", "letter", "friend", "summer", "winter", "bright", "quiet", "happy",
)


@dataclass
class TinyCorpusInfo:
    """What :func:`make_tiny_librispeech` wrote.

    Attributes:
        root: the corpus root (``libri_root``).
        corpus_source: "espeak-ng" (real synthetic speech) or "synthetic" (harmonic tones).
        subsets: subset -> utterance ids.
        speakers: speaker id -> voice description (espeak voice + pitch + rate, or f0).
        transcripts: utterance id -> uppercase text.
        total_seconds: audio duration over all subsets.
    """

    root: Path
    corpus_source: str
    subsets: dict[str, list[str]] = field(default_factory=dict)
    speakers: dict[str, str] = field(default_factory=dict)
    transcripts: dict[str, str] = field(default_factory=dict)
    total_seconds: float = 0.0

    @property
    def num_utterances(self) -> int:
        return sum(len(ids) for ids in self.subsets.values())


def espeak_available() -> bool:
    """espeak-ng on PATH and not disabled by ``$RECYCLE_DISTILL_NO_ESPEAK=1``."""
    return shutil.which("espeak-ng") is not None and os.environ.get(NO_ESPEAK_ENV) != "1"


def _resample(samples: np.ndarray, source_rate: int) -> np.ndarray:
    if source_rate == SAMPLE_RATE:
        return samples
    try:
        import soxr

        return soxr.resample(samples, source_rate, SAMPLE_RATE).astype(np.float32)
    except ImportError:  # soxr is an optional extra; torchaudio ships with the package
        import torch
        import torchaudio.functional

        return torchaudio.functional.resample(torch.from_numpy(samples), source_rate, SAMPLE_RATE).numpy()


def _espeak(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    """16 kHz float32 speech of ``text`` (espeak-ng writes a 22 050 Hz WAV to stdout)."""
    command = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text]
    result = subprocess.run(command, capture_output=True, check=True, timeout=60)
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32", always_2d=False)
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return _resample(np.ascontiguousarray(samples), rate)


def _harmonic_voice(text: str, f0: float, rng: np.random.Generator) -> np.ndarray:
    """A stand-in "voice": one harmonic burst per word around the speaker's f0, with noise."""
    pieces = []
    for word in text.split():
        duration = 0.12 + 0.05 * len(word) + 0.03 * rng.random()
        t = np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
        contour = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * (1.5 + rng.random()) * t))
        phase = 2 * np.pi * np.cumsum(contour) / SAMPLE_RATE
        # A word-dependent spectral tilt stands in for formants so words differ.
        tilt = 0.5 + 0.4 * (sum(map(ord, word)) % 7) / 7
        wave = sum(tilt**k * np.sin(k * phase) for k in range(1, 9))
        pieces.append(np.hanning(t.size) * wave / 4)
        pieces.append(np.zeros(int((0.04 + 0.06 * rng.random()) * SAMPLE_RATE)))
    samples = np.concatenate(pieces)
    samples += 0.003 * rng.standard_normal(samples.size)
    return samples.astype(np.float32)


def _loud_fallback_warning() -> None:
    banner = "!" * 78
    logger.warning(
        "\n%s\n!! espeak-ng NOT FOUND (or %s=1): the tiny corpus uses SYNTHETIC HARMONIC TONES,\n"
        "!! not speech. Install it (apt-get install -y espeak-ng) for a real speech corpus.\n%s",
        banner, NO_ESPEAK_ENV, banner,
    )


def warn_no_espeak() -> None:
    """Log the loud banner that synthetic tones, not speech, are being written."""
    _loud_fallback_warning()


def speak(text: str, voice: str = "en-us", pitch: int = 50, speed: int = 175, *,
          use_espeak: bool = True, seed: int = 0) -> np.ndarray:
    """16 kHz float32 samples of ``text`` in [-1, 1].

    ``use_espeak=True`` runs espeak-ng with ``voice`` (any espeak-ng voice: ``en-us+m1``,
    ``cmn`` ...); False gives the harmonic stand-in voice (pitch from ``pitch``, noise from
    ``seed``). Callers decide once per corpus (see :func:`espeak_available`) and warn loudly.
    """
    if use_espeak:
        samples = _espeak(text, voice, pitch, speed)
    else:
        # One syllable-like burst per character for scripts without spaces (Chinese).
        words = text.split() if len(text.split()) > 1 else list(text.replace(" ", ""))
        samples = _harmonic_voice(" ".join(words), 100.0 + 2.0 * pitch, np.random.default_rng(seed))
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def make_tiny_librispeech(
    root: PathLike,
    *,
    speakers: int = 6,
    utterances_per_speaker: int = 6,
    seed: int = 0,
    subsets: Sequence[str] = ("train-clean-100",),
    min_words: int = 3,
    max_words: int = 8,
    use_espeak: Optional[bool] = None,
    num_threads: int = 4,
) -> TinyCorpusInfo:
    """Write a tiny LibriSpeech-layout corpus; each subset gets ``speakers`` new speakers.

    Args:
        root: corpus root (created).
        speakers: speakers per subset (one chapter each).
        utterances_per_speaker: utterances per speaker.
        seed: everything (speaker ids, voices, sentences) follows from it.
        subsets: subset folder names.
        min_words, max_words: sentence length range.
        use_espeak: None = espeak-ng when available; False = synthetic voice; True = require
            espeak-ng (RuntimeError when missing).
        num_threads: concurrent espeak-ng processes.

    Returns:
        :class:`TinyCorpusInfo` (``corpus_source`` says which audio was used).
    """
    if isinstance(subsets, str):
        subsets = [subsets]
    available = espeak_available()
    if use_espeak and not available:
        raise RuntimeError("use_espeak=True but espeak-ng is not on PATH (apt-get install -y espeak-ng)")
    espeak = available if use_espeak is None else use_espeak
    if not espeak:
        _loud_fallback_warning()
    rng = np.random.default_rng(seed)
    base = Path(root)
    info = TinyCorpusInfo(root=base.resolve(), corpus_source="espeak-ng" if espeak else "synthetic")
    total = speakers * len(subsets)
    speaker_ids = rng.choice(np.arange(100, 9000), size=total, replace=False)
    jobs = []  # (path, text, speaker voice parameters)
    for number, speaker_id in enumerate(speaker_ids.tolist()):
        subset = subsets[number // speakers]
        chapter = int(rng.integers(1000, 200000))
        voice = VOICES[number % len(VOICES)]
        pitch, speed = int(rng.integers(25, 76)), int(rng.integers(140, 186))
        f0 = float(rng.uniform(95, 240))
        speaker = str(speaker_id)
        info.speakers[speaker] = f"{voice} -p {pitch} -s {speed}" if espeak else f"harmonic f0={f0:.0f} Hz"
        folder = base / subset / speaker / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for utterance in range(utterances_per_speaker):
            uid = f"{speaker}-{chapter}-{utterance:04d}"
            words = rng.choice(WORDS, size=int(rng.integers(min_words, max_words + 1)))
            text = " ".join(words)
            lines.append(f"{uid} {text.upper()}\n")
            info.subsets.setdefault(subset, []).append(uid)
            info.transcripts[uid] = text.upper()
            jobs.append((folder / f"{uid}.flac", text, voice, pitch, speed, f0, int(rng.integers(2**31))))
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines), encoding="utf-8")

    def render(job: tuple) -> float:
        path, text, voice, pitch, speed, f0, job_seed = job
        if espeak:
            samples = _espeak(text, voice, pitch, speed)
        else:
            samples = _harmonic_voice(text, f0, np.random.default_rng(job_seed))
        samples = np.clip(samples, -1.0, 1.0)
        soundfile.write(str(path), samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return samples.size / SAMPLE_RATE

    # espeak-ng runs are separate processes: threads only wait on them.
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        info.total_seconds = float(sum(pool.map(render, jobs)))
    logger.info(
        "tiny corpus: %d utterances, %d speakers, %.1f s of %s audio in %s",
        info.num_utterances, len(info.speakers), info.total_seconds, info.corpus_source, info.root,
    )
    return info


def make_len_for_bucket(root: PathLike, subsets: Sequence[str], out_dir: PathLike) -> list[Path]:
    """Write S3PRL ``<out_dir>/<subset>.csv`` files (``,file_path,length,label``) for a corpus.

    Lengths come from the audio headers; ``file_path`` is relative to ``root``.

    Returns:
        the CSV paths, one per subset.
    """
    if isinstance(subsets, str):
        subsets = [subsets]
    written = []
    libri_root = Path(root).resolve()
    for subset in subsets:
        manifest = scan_librispeech(libri_root, [subset], use_cache=False, progress=False)
        written.append(write_len_for_bucket(manifest, Path(out_dir) / f"{subset}.csv", libri_root))
    return written
