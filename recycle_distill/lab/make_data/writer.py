"""The whole ``make-data`` folder: which corpora, where each goes, and replacing only our own.

The folder is written as a temporary sibling and swapped in when complete
(:func:`recycle_distill.util.atomic.atomic_write_folder`); every path inside it is relative
(the bucket CSVs, ``iden_split.txt``), so the rename keeps it valid. ``make-data.json`` marks it
as ours: a non-empty folder without it, or with entries make-data does not write, is refused
before anything is spoken.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from recycle_distill.lab.make_data.speech import make_aishell_corpus, require_espeak
from recycle_distill.lab.make_data.superb import make_speech_commands, make_tiny_asr, make_tiny_voxceleb1
from recycle_distill.training.data.synth import WORDS
from recycle_distill.lab.owned_folder import check_owned_folder, marker_block
from recycle_distill.util.atomic import atomic_write_folder

logger = logging.getLogger(__name__)

__all__ = ["CORPORA", "MARKER", "MakeDataError", "make_data", "check_data_output"]

PathLike = Union[str, "os.PathLike[str]"]
MARKER = "make-data.json"
KIND = "make-data"
FORMAT_VERSION = 1
HANZI = "零一二三四五六七八九"  # the Mandarin corpus's characters: espeak-ng's cmn voice reads digits well
AISHELL_SPLITS = {"train": 8, "dev": 2, "test": 2}


class MakeDataError(RuntimeError):
    """make-data cannot run as asked (no espeak-ng, no transformers, an unknown corpus name)."""


def _librispeech(out: Path, seed: int) -> dict[str, Any]:
    asr = make_tiny_asr(out, seed=seed + 1, use_espeak=True)
    return {"LibriSpeech": "libri_root (ASR), corpus.root (cif_asr)", "len_for_bucket": "bucket_file and dict_path (ASR)",
            "seconds": round(asr.info.total_seconds, 2)}


def _speech_commands(out: Path, seed: int) -> dict[str, Any]:
    corpus = make_speech_commands(out / "speech_commands", seed=seed, use_espeak=True)
    return {"speech_commands/train": "speech_commands_root (KS)", "speech_commands/test": "speech_commands_test_root (KS)",
            "clips": corpus.counts}


def _voxceleb1(out: Path, seed: int) -> dict[str, Any]:
    make_tiny_voxceleb1(out / "VoxCeleb1", seed=seed, use_espeak=True)
    return {"VoxCeleb1": "file_path (SID)", "VoxCeleb1/iden_split.txt": "meta_data (SID)"}


def aishell_texts(seed: int) -> dict[str, list[str]]:
    """split -> four-character transcripts of :data:`HANZI`."""
    rng = random.Random(seed)
    return {split: ["".join(rng.choice(HANZI) for _ in range(4)) for _ in range(count)]
            for split, count in AISHELL_SPLITS.items()}


def _aishell(out: Path, seed: int) -> dict[str, Any]:
    make_aishell_corpus(out / "aishell", aishell_texts(seed), use_espeak=True)
    return {"aishell": "corpus.root with corpus.name=aishell (cif_asr)"}


def _bert(out: Path, seed: int) -> dict[str, Any]:
    try:
        from recycle_distill.lab.make_data.bert import write_tiny_bert

        write_tiny_bert(out / "bert-en", sorted(set(WORDS)), seed=seed)
    except ImportError as err:
        raise MakeDataError(f"the tiny BERT folders need transformers ({err}): pip install 'recycle-distill[hf]', "
                            f"or leave them out (--only without bert)") from None
    write_tiny_bert(out / "bert-zh", list(HANZI), seed=seed + 1)
    return {"bert-en": "lm.path for LibriSpeech (cif_asr)", "bert-zh": "lm.path for aishell (cif_asr)"}


# corpus name -> (writer, the top-level entries it makes)
CORPORA: dict[str, tuple[Callable[[Path, int], dict[str, Any]], tuple[str, ...]]] = {
    "librispeech": (_librispeech, ("LibriSpeech", "len_for_bucket")),
    "speech_commands": (_speech_commands, ("speech_commands",)),
    "voxceleb1": (_voxceleb1, ("VoxCeleb1",)),
    "aishell": (_aishell, ("aishell",)),
    "bert": (_bert, ("bert-en", "bert-zh")),
}


def check_data_output(out: PathLike) -> bool:
    """True when ``out`` holds an earlier make-data folder that may be replaced, False when it is
    missing or empty; :class:`OutputError` otherwise (see :func:`check_owned_folder`)."""
    own = [entry for _, entries in CORPORA.values() for entry in entries]
    return check_owned_folder(out, MARKER, KIND, own)


def make_data(out: PathLike, corpora: Optional[Sequence[str]] = None, seed: int = 0) -> dict[str, Any]:
    """Write the chosen corpora (default: all of :data:`CORPORA`) into the folder ``out``.

    ``out`` must be missing, empty or an earlier make-data folder (replaced as a whole).

    Returns:
        the manifest written to ``<out>/make-data.json``: per corpus, the entries it wrote
        and the config keys they are for.

    Raises:
        MakeDataError: an unknown corpus name, espeak-ng missing, transformers missing (bert).
        OutputError: ``out`` is not ours to replace (nothing was written).
    """
    chosen = list(CORPORA) if corpora is None else list(dict.fromkeys(corpora))
    unknown = [name for name in chosen if name not in CORPORA]
    if unknown or not chosen:
        raise MakeDataError(f"unknown corpus {unknown[0]!r}; choose from {', '.join(CORPORA)}" if unknown
                            else f"no corpus chosen; choose from {', '.join(CORPORA)}")
    check_data_output(out)
    require_espeak()
    manifest: dict[str, Any] = {"recycle_distill": marker_block(KIND, FORMAT_VERSION), "seed": seed, "corpora": {}}

    def write(temp: str) -> None:
        for name in chosen:
            started = time.monotonic()
            manifest["corpora"][name] = CORPORA[name][0](Path(temp), seed)
            logger.info("make-data: %s written in %.1f s", name, time.monotonic() - started)
        with open(os.path.join(temp, MARKER), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, ensure_ascii=False)
            handle.write("\n")

    atomic_write_folder(out, write)
    return manifest
