"""Tiny SUPERB corpora in the layouts S3PRL's downstreams read, spoken by espeak-ng.

- :func:`make_tiny_asr` (ASR, ``-d asr``): LibriSpeech + the ``len_for_bucket`` CSVs S3PRL's
  ASR dataset reads (written here: S3PRL's own bucket script is interactive) + its char dict;
- :func:`make_speech_commands` (KS, ``-d speech_commands``): Speech Commands v1's
  ``train/<word>/<speaker>_nohash_<n>.wav`` with ``_background_noise_``, and a ``test`` folder
  with ``_unknown_`` and ``_silence_`` as in SUPERB's test set;
- :func:`make_tiny_voxceleb1` (SID, ``-d voxceleb1``): ``{dev,test}/wav/id1NNNN/<yt>/<n>.wav``
  and ``iden_split.txt``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile

from recycle_distill.lab.demo.keywords import KEYWORDS
from recycle_distill.lab.make_data.speech import espeak_choice
from recycle_distill.s3prl.superb.launcher import ASR_DICT
from recycle_distill.training.data.synth import VOICES, TinyCorpusInfo, make_len_for_bucket, make_tiny_librispeech, speak
from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = [
    "ASR_SUBSETS", "TinyAsr", "TinyVox", "TinySpeechCommands", "make_tiny_asr", "make_tiny_voxceleb1",
    "make_speech_commands", "speech_commands_split",
]

PathLike = Union[str, "os.PathLike[str]"]
ASR_SUBSETS = ("train-clean-100", "dev-clean", "test-clean")
UNKNOWN_WORDS = ("bed", "bird", "cat")  # Speech Commands words outside the ten: SUPERB's _unknown_
NOISE_SECONDS = 3  # a _silence_ training clip is cut from a background file: it must exceed 1 s


@dataclass
class TinyVox:
    """A tiny VoxCeleb1 SID corpus: ``root`` (``file_path``) and ``meta`` (``iden_split.txt``)."""

    root: Path
    meta: Path
    corpus_source: str
    speakers: int


def make_tiny_voxceleb1(root: PathLike, speakers: int = 2, train_per_speaker: int = 2, seed: int = 0,
                        use_espeak: Optional[bool] = None) -> TinyVox:
    """Write a VoxCeleb1 SID corpus: per speaker ``train_per_speaker`` train, 1 dev, 1 test utterance.

    Split 1/2/3 = train/dev/test as in ``iden_split.txt``; the test utterances sit under
    ``test/wav`` and the rest under ``dev/wav``, as in VoxCeleb1.
    """
    root = Path(root)
    per_speaker = train_per_speaker + 2
    source = make_tiny_librispeech(root / "_speech", speakers=speakers, utterances_per_speaker=per_speaker,
                                   seed=seed, min_words=2, max_words=4, use_espeak=use_espeak)
    by_speaker: dict[str, list[str]] = {}
    for uid in source.subsets["train-clean-100"]:
        by_speaker.setdefault(uid.split("-")[0], []).append(uid)
    lines = []
    for number, (speaker, uids) in enumerate(sorted(by_speaker.items())):
        vox_id = f"id{10001 + number}"
        for index, uid in enumerate(sorted(uids)):
            split = 1 if index < train_per_speaker else (2 if index == train_per_speaker else 3)
            rel = f"{vox_id}/yt{number}{index % 2}/{index + 1:05d}.wav"
            target = root / ("test" if split == 3 else "dev") / "wav" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            flac = next((root / "_speech").rglob(f"{uid}.flac"))
            samples, rate = soundfile.read(str(flac), dtype="float32")
            soundfile.write(str(target), samples, rate, subtype="PCM_16")
            lines.append(f"{split} {rel}\n")
    shutil.rmtree(root / "_speech")
    meta = root / "iden_split.txt"
    meta.write_text("".join(lines))
    return TinyVox(root.resolve(), meta.resolve(), source.corpus_source, speakers)


@dataclass
class TinyAsr:
    """A tiny LibriSpeech ASR corpus: ``libri_root``, ``bucket`` (CSV folder), ``dict_path``."""

    libri_root: Path
    bucket: Path
    dict_path: Path
    info: TinyCorpusInfo


def make_tiny_asr(root: PathLike, utterances: int = 4, seed: int = 1, use_espeak: Optional[bool] = None) -> TinyAsr:
    """``<root>/LibriSpeech``: one speaker with ``utterances`` sentences in each of train-clean-100,
    dev-clean and test-clean; ``<root>/len_for_bucket/<subset>.csv`` and its ``char.dict``."""
    root = Path(root)
    info = make_tiny_librispeech(root / "LibriSpeech", speakers=1, utterances_per_speaker=utterances,
                                 seed=seed, subsets=ASR_SUBSETS, min_words=2, max_words=4, use_espeak=use_espeak)
    bucket = root / "len_for_bucket"
    make_len_for_bucket(info.root, ASR_SUBSETS, bucket)
    dict_path = bucket / "char.dict"
    shutil.copyfile(ASR_DICT, dict_path)
    return TinyAsr(info.root, bucket.resolve(), dict_path.resolve(), info)


@dataclass
class TinySpeechCommands:
    """A tiny Speech Commands v1 corpus: ``train`` (``speech_commands_root``) and ``test``
    (``speech_commands_test_root``); ``counts``: split -> class -> clips."""

    train: Path
    test: Path
    counts: dict[str, dict[str, int]]


def speech_commands_split(file_name: str) -> str:
    """``train``, ``dev`` or ``test`` for a Speech Commands file name: the rule of the dataset's
    README (a SHA-1 of the speaker part, before ``_nohash_``), which S3PRL's ``split_dataset`` applies."""
    speaker = file_name.split("_nohash_")[0]
    # 2 ** 27 - 1: MAX_NUM_WAVS_PER_CLASS of the dataset's README.
    percentage = (int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16) % 2 ** 27) * (100.0 / (2 ** 27 - 1))
    return "dev" if percentage < 10 else ("test" if percentage < 20 else "train")


def _speakers(count: int, split: str, start: int) -> list[str]:
    """``count`` 8-hex-digit speaker names (from ``start`` on) that the hash rule puts in ``split``."""
    names, number = [], start
    while len(names) < count:
        name = f"{number:08x}"
        if speech_commands_split(f"{name}_nohash_0.wav") == split:
            names.append(name)
        number += 1
    return names


def _one_second(samples: np.ndarray) -> np.ndarray:
    """(16000,): the clip centred in one second (cut to its middle second when longer), as in the dataset."""
    if samples.size >= SAMPLE_RATE:
        start = (samples.size - SAMPLE_RATE) // 2
        return samples[start:start + SAMPLE_RATE]
    left = (SAMPLE_RATE - samples.size) // 2
    return np.pad(samples, (left, SAMPLE_RATE - samples.size - left))


def _noise(path: Path, seconds: float, rng: np.random.Generator) -> None:
    """Quiet brown-ish noise (integrated white noise, normalised) as a background clip."""
    walk = np.cumsum(rng.standard_normal(int(seconds * SAMPLE_RATE)))
    walk -= np.linspace(walk[0], walk[-1], walk.size)  # no drift
    soundfile.write(str(path), (0.05 * walk / (np.abs(walk).max() + 1e-9)).astype(np.float32), SAMPLE_RATE,
                    subtype="PCM_16")


def make_speech_commands(root: PathLike, train_voices: int = 3, dev_voices: int = 1, test_voices: int = 1,
                         seed: int = 0, use_espeak: Optional[bool] = None) -> TinySpeechCommands:
    """Write ``<root>/train`` and ``<root>/test`` as Speech Commands v1 and SUPERB's test set.

    Each voice (an espeak-ng variant with its own pitch and speed) is one speaker and says the
    ten keywords and three other words once; the speakers' names are picked so that the
    dataset's hash rule (:func:`speech_commands_split`) puts ``train_voices`` of them in train and
    ``dev_voices`` in dev. ``train/_background_noise_`` holds two 3 s noise clips; the test folder
    holds the keywords of ``test_voices`` further voices, ``_unknown_`` and one ``_silence_`` clip.
    """
    root = Path(root)
    total = train_voices + dev_voices + test_voices
    if not 1 <= total <= len(VOICES) or min(train_voices, dev_voices, test_voices) < 1:
        raise ValueError(f"speech commands: 1 to {len(VOICES)} voices in all, at least one per split; "
                         f"got train {train_voices}, dev {dev_voices}, test {test_voices}")
    espeak = espeak_choice(use_espeak)
    rng = np.random.default_rng(seed)
    speakers = _speakers(train_voices, "train", 0) + _speakers(dev_voices + test_voices, "dev", 0)
    jobs: list[tuple[Path, str, str, int, int]] = []  # (file, word, voice, pitch, speed)
    counts: dict[str, dict[str, int]] = {"train": {}, "dev": {}, "test": {}}
    for number, speaker in enumerate(speakers):
        voice, pitch, speed = VOICES[number], int(rng.integers(25, 76)), int(rng.integers(120, 200))
        split = "train" if number < train_voices else ("dev" if number < train_voices + dev_voices else "test")
        for word in (*KEYWORDS, *UNKNOWN_WORDS):
            # The test set files other words under _unknown_: one speaker's takes are numbered there.
            unknown_test = split == "test" and word not in KEYWORDS
            folder = "_unknown_" if unknown_test else word
            take = UNKNOWN_WORDS.index(word) if unknown_test else 0
            base = root / ("test" if split == "test" else "train") / folder
            base.mkdir(parents=True, exist_ok=True)
            jobs.append((base / f"{speaker}_nohash_{take}.wav", word, voice, pitch, speed))
            label = word if word in KEYWORDS else "_unknown_"
            counts[split][label] = counts[split].get(label, 0) + 1
    noise = root / "train" / "_background_noise_"
    noise.mkdir(parents=True)
    for index in range(2):
        _noise(noise / f"noise_{index}.wav", NOISE_SECONDS, rng)
    silence = root / "test" / "_silence_"
    silence.mkdir(parents=True)
    _noise(silence / "silence_0.wav", 1.0, rng)
    counts["test"]["_silence_"] = 1
    for split in ("train", "dev"):
        counts[split]["_silence_"] = 2  # S3PRL adds every background clip to both train and dev

    def one(job: tuple[Path, str, str, int, int]) -> None:
        path, word, voice, pitch, speed = job
        samples = speak(word, voice, pitch, speed, use_espeak=espeak, seed=pitch * 1000 + speed)
        soundfile.write(str(path), _one_second(samples), SAMPLE_RATE, subtype="PCM_16")

    # espeak-ng runs are separate processes: threads only wait on them.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, jobs))
    return TinySpeechCommands(root.resolve() / "train", root.resolve() / "test", counts)
