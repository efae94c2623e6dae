"""Utterance lists of the two corpus layouts the CIF recognizer reads.

LibriSpeech::

    <root>/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac   (or .wav)
    <root>/<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt    "<utt id> <TEXT>"

AISHELL-1 (``data_aishell`` after unpacking the per-speaker archives)::

    <root>/wav/{train,dev,test}/<speaker>/<utt id>.wav
    <root>/transcript/aishell_transcript_v0.8.txt                "<utt id> word word ..."

AISHELL-1 has audio without a transcript line; those files are skipped and counted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

__all__ = ["AISHELL_SPLITS", "AISHELL_TRANSCRIPT", "CorpusError", "Utterance", "scan_aishell", "scan_librispeech"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

AISHELL_SPLITS = ("train", "dev", "test")
AISHELL_TRANSCRIPT = Path("transcript") / "aishell_transcript_v0.8.txt"
LIBRISPEECH_AUDIO = (".flac", ".wav")


class CorpusError(ValueError):
    """A corpus folder is missing, incomplete or empty; the message names the path."""


@dataclass(frozen=True)
class Utterance:
    """One recording and its transcript.

    Attributes:
        id: the corpus' utterance id (file stem).
        path: absolute path of the audio file.
        text: the transcript line without its id.
        speaker: speaker id (LibriSpeech: the reader; AISHELL-1: the ``S0002``-style folder).
    """

    id: str
    path: Path
    text: str
    speaker: str


def _subset_list(subsets: Union[str, Sequence[str]]) -> list[str]:
    return [subsets] if isinstance(subsets, str) else list(subsets)


def _read_transcript(path: Path) -> dict[str, str]:
    """``{utt id: text}`` of a ``"<id> <text>"`` file; blank lines are ignored."""
    lines = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(maxsplit=1)
        if parts:
            lines[parts[0]] = parts[1] if len(parts) > 1 else ""
    return lines


def scan_librispeech(root: PathLike, subsets: Union[str, Sequence[str]]) -> list[Utterance]:
    """All utterances of the given LibriSpeech subsets, sorted by id.

    Raises:
        CorpusError: a missing root or subset folder, audio whose chapter has no
            ``.trans.txt``, or a subset without utterances. Transcript lines without audio
            are skipped with a logged count.
    """
    base = Path(root)
    if not base.is_dir():
        raise CorpusError(f"LibriSpeech root {base} is not a folder")
    found: list[Utterance] = []
    for subset in _subset_list(subsets):
        folder = base / subset
        if not folder.is_dir():
            raise CorpusError(f"LibriSpeech subset folder {folder} does not exist")
        in_subset, missing_audio = [], 0
        for chapter in sorted(path for path in folder.glob("*/*") if path.is_dir()):
            speaker = chapter.parent.name
            audio = {path.stem: path for path in chapter.iterdir() if path.suffix.lower() in LIBRISPEECH_AUDIO}
            transcript = chapter / f"{speaker}-{chapter.name}.trans.txt"
            if not transcript.is_file():
                if audio:
                    raise CorpusError(f"transcript file {transcript} is missing")
                continue
            for utt_id, text in _read_transcript(transcript).items():
                if utt_id not in audio:
                    missing_audio += 1
                    continue
                in_subset.append(Utterance(utt_id, audio[utt_id].resolve(), text, speaker))
        if missing_audio:
            logger.warning("LibriSpeech %s: skipped %d transcript lines without audio", subset, missing_audio)
        if not in_subset:
            raise CorpusError(f"LibriSpeech subset {folder} has no utterances")
        found.extend(in_subset)
    return sorted(found, key=lambda utterance: utterance.id)


def scan_aishell(root: PathLike, split: Union[str, Sequence[str]]) -> list[Utterance]:
    """All transcribed utterances of AISHELL-1 split(s) ``train``/``dev``/``test``, sorted by id.

    Raises:
        CorpusError: a missing root, split folder or transcript file, an unknown split name, or
            a split without transcribed utterances.
    """
    base = Path(root)
    if not base.is_dir():
        raise CorpusError(f"AISHELL-1 root {base} is not a folder")
    transcript = base / AISHELL_TRANSCRIPT
    if not transcript.is_file():
        raise CorpusError(f"AISHELL-1 transcript file {transcript} is missing")
    texts = _read_transcript(transcript)
    found: list[Utterance] = []
    for name in _subset_list(split):
        if name not in AISHELL_SPLITS:
            raise CorpusError(f"AISHELL-1 split must be one of {', '.join(AISHELL_SPLITS)}, got {name!r}")
        folder = base / "wav" / name
        if not folder.is_dir():
            raise CorpusError(f"AISHELL-1 split folder {folder} does not exist")
        in_split, untranscribed = [], 0
        for path in sorted(folder.glob("*/*.wav")):
            if path.stem in texts:
                in_split.append(Utterance(path.stem, path.resolve(), texts[path.stem], path.parent.name))
            else:
                untranscribed += 1
        if untranscribed:
            logger.info("AISHELL-1 %s: skipped %d wav files without a transcript line in %s",
                        name, untranscribed, transcript)
        if not in_split:
            raise CorpusError(f"AISHELL-1 split {folder} has no transcribed utterances")
        found.extend(in_split)
    return sorted(found, key=lambda utterance: utterance.id)
