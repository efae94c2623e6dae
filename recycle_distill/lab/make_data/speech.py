"""Given texts spoken by espeak-ng in the LibriSpeech and AISHELL-1 layouts (16 kHz).

English uses ``en-us`` voice variants, one per speaker; Mandarin uses espeak-ng's ``cmn`` voice
at one pitch per speaker. Without espeak-ng, ``use_espeak=None`` falls back loudly to the
synthetic stand-in voice of :mod:`recycle_distill.training.data.synth` (the tests' choice) and
``use_espeak=True`` refuses (make-data's choice: a corpus of tones is no corpus to try things on).
"""

from __future__ import annotations

import os
import pathlib
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Union

import soundfile

from recycle_distill.training.data.synth import NO_ESPEAK_ENV, espeak_available, speak, warn_no_espeak
from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = [
    "EN_VOICES", "CMN_PITCHES", "EspeakMissing", "require_espeak", "espeak_choice",
    "make_librispeech_corpus", "make_aishell_corpus",
]

PathLike = Union[str, "os.PathLike[str]"]
EN_VOICES = ("en-us+m1", "en-us+f2", "en-us+m3", "en-us+f4")
CMN_PITCHES = (35, 55, 75)
INSTALL_HINT = "install it with `apt install espeak-ng` (Debian/Ubuntu; `brew install espeak-ng` on macOS)"
# (file, text, espeak voice, pitch, seed of the stand-in voice, soundfile format)
Job = tuple[pathlib.Path, str, str, int, int, str]


class EspeakMissing(RuntimeError):
    """espeak-ng is needed and not there."""


def require_espeak() -> None:
    """Raise :class:`EspeakMissing` (one line saying how to install it) unless espeak-ng runs here."""
    if not espeak_available():
        disabled = " (or it is switched off by {}=1)".format(NO_ESPEAK_ENV) if os.environ.get(NO_ESPEAK_ENV) == "1" else ""
        raise EspeakMissing(f"espeak-ng is not on PATH{disabled}: make-data speaks its corpora with it; {INSTALL_HINT}")


def espeak_choice(use_espeak: Optional[bool]) -> bool:
    """Whether to speak with espeak-ng: None = when it is there (else a loud warning and the
    stand-in voice), True = it must be there (:class:`EspeakMissing`), False = never."""
    if use_espeak:
        require_espeak()
        return True
    if use_espeak is None:
        available = espeak_available()
        if not available:
            warn_no_espeak()
        return available
    return False


def render(jobs: Sequence[Job], use_espeak: bool, threads: int = 4) -> float:
    """Speak every job into its file (PCM 16); returns the seconds written. espeak-ng runs are
    separate processes, so the threads only wait on them."""
    def one(job: Job) -> float:
        path, text, voice, pitch, seed, audio_format = job
        samples = speak(text, voice, pitch, use_espeak=use_espeak, seed=seed)
        soundfile.write(str(path), samples, SAMPLE_RATE, format=audio_format, subtype="PCM_16")
        return samples.size / SAMPLE_RATE

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return float(sum(pool.map(one, jobs)))


def make_librispeech_corpus(root: PathLike, texts: dict[str, list[str]], voices: Sequence[str] = EN_VOICES,
                            use_espeak: Optional[bool] = None) -> pathlib.Path:
    """Speak ``texts`` (subset -> sentences) into ``<root>/<subset>/<spk>/<chapter>/`` as LibriSpeech.

    Utterance ``k`` of a subset goes to speaker ``k % len(voices)`` (its own voice), one chapter
    per speaker; ``.trans.txt`` holds the upper-cased text; audio is 16 kHz FLAC. Speaker ids
    are ``100 + 10 * subset number + speaker``, chapters ``speaker id * 10``. Returns ``root``.
    """
    base = pathlib.Path(root)
    espeak = espeak_choice(use_espeak)
    jobs: list[Job] = []
    for subset_number, (subset, sentences) in enumerate(texts.items()):
        lines: dict[pathlib.Path, list[str]] = {}
        for number, sentence in enumerate(sentences):
            speaker_number = number % len(voices)
            speaker = 100 + 10 * subset_number + speaker_number
            chapter = speaker * 10
            folder = base / subset / str(speaker) / str(chapter)
            folder.mkdir(parents=True, exist_ok=True)
            utt_id = f"{speaker}-{chapter}-{number:04d}"
            lines.setdefault(folder / f"{speaker}-{chapter}.trans.txt", []).append(f"{utt_id} {sentence.upper()}")
            jobs.append((folder / f"{utt_id}.flac", sentence, voices[speaker_number], 50, number, "FLAC"))
        for path, content in lines.items():
            path.write_text("\n".join(content) + "\n", encoding="utf-8")
    render(jobs, espeak)
    return base


def make_aishell_corpus(root: PathLike, texts: dict[str, list[str]], speakers: int = 2,
                        use_espeak: Optional[bool] = None) -> pathlib.Path:
    """Speak ``texts`` (split -> transcripts) into the AISHELL-1 layout with espeak-ng's ``cmn`` voice.

    Writes ``<root>/wav/<split>/S<nnnn>/BAC009S<nnnn>W<mmmm>.wav`` (16 kHz PCM) and one
    ``<root>/transcript/aishell_transcript_v0.8.txt`` with ``<id> <transcript>`` lines for all
    splits, sorted by id as in the real file. Utterance ``k`` of a split goes to speaker
    ``k % speakers`` (a pitch per speaker). Returns ``root``.
    """
    base = pathlib.Path(root)
    espeak = espeak_choice(use_espeak)
    jobs: list[Job] = []
    lines = []
    for split_number, (split, sentences) in enumerate(texts.items()):
        for number, sentence in enumerate(sentences):
            speaker_number = number % speakers
            speaker = f"S{2 + 100 * split_number + speaker_number:04d}"
            utt_id = f"BAC009{speaker}W{number + 1:04d}"
            folder = base / "wav" / split / speaker
            folder.mkdir(parents=True, exist_ok=True)
            lines.append(f"{utt_id} {sentence}")
            pitch = CMN_PITCHES[speaker_number % len(CMN_PITCHES)]
            jobs.append((folder / f"{utt_id}.wav", sentence.replace(" ", ""), "cmn", pitch, number, "WAV"))
    transcript = base / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.parent.mkdir(parents=True, exist_ok=True)
    transcript.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    render(jobs, espeak)
    return base
