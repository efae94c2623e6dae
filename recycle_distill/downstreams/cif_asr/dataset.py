"""Prepared splits, the CIF recognizer's dataset, its collate function and data loader.

:func:`prepare_split` turns a corpus split into utterances with units and reports every
transcript problem (``docs/cif.md``) before any training starts. :class:`CifAsrDataset` yields
``(wav, utt_id, target, lm_ids, teacher vectors or None)``; :func:`collate` keeps them as lists
because S3PRL's runner iterates ``for wavs, *others in loader`` and hands ``*others`` to the
expert's ``forward``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import soundfile
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from recycle_distill.util.sample_rate import SAMPLE_RATE  # re-exported: the recognizer's input rate

from recycle_distill.downstreams.cif_asr.config import CORPORA, DEFAULT_LANGUAGE, UNIT_ERRORS  # re-exported
from recycle_distill.downstreams.cif_asr.corpus import Utterance, scan_aishell, scan_librispeech
from recycle_distill.downstreams.cif_asr.feature_cache import FeatureCache, FeatureCacheError
from recycle_distill.downstreams.cif_asr.sampler import DurationSortedBatchSampler
from recycle_distill.downstreams.cif_asr.text import (
    PROBLEM_TOO_LONG,
    UNK,
    UnitSplit,
    UnitVocabulary,
    problem_kind,
    transcript_units,
)

__all__ = [
    "CORPORA", "DEFAULT_LANGUAGE", "SAMPLE_RATE", "CifAsrDataset", "PreparedItem", "PreparedSplit", "UnitError",
    "collate", "load_audio", "make_dataloader", "prepare_split",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

EXAMPLES_LOGGED = 3
# Tokenizers without a real limit report a huge model_max_length; ignore anything above this.
_NO_LIMIT = 1_000_000


class UnitError(ValueError):
    """Transcripts the language model's tokenizer cannot turn into aligned units (``unit_error="fail"``)."""


@dataclass
class PreparedItem:
    """One utterance and its units."""

    utterance: Utterance
    units: UnitSplit

    @property
    def id(self) -> str:
        return self.utterance.id


@dataclass
class PreparedSplit:
    """A split ready for training: only utterances without unit problems.

    Attributes:
        name: e.g. ``"train-clean-100"`` or ``"train"`` (several joined by ``+``).
        corpus, language: as passed to :func:`prepare_split`.
        items: kept utterances, sorted by id.
        problem_counts: problem kind -> number of occurrences over the whole split.
        dropped: utterances left out because of problems (``unit_error="skip"``).
    """

    name: str
    corpus: str
    language: str
    items: list[PreparedItem]
    problem_counts: dict[str, int] = field(default_factory=dict)
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def unit_splits(self) -> list[UnitSplit]:
        return [item.units for item in self.items]

    def lm_items(self) -> list[tuple[str, list[int]]]:
        """``(utterance id, language-model ids)`` pairs, the input of ``build_cache``."""
        return [(item.id, list(item.units.lm_ids)) for item in self.items]


def _split_names(subsets_or_split: Union[str, Sequence[str]]) -> list[str]:
    return [subsets_or_split] if isinstance(subsets_or_split, str) else list(subsets_or_split)


def prepare_split(corpus: str, root: PathLike, subsets_or_split: Union[str, Sequence[str]], tokenizer,
                  language: Optional[str] = None, unit_error: str = "fail",
                  max_tokens: Optional[int] = None) -> PreparedSplit:
    """Scan a split, split its transcripts into units and handle problem transcripts.

    Args:
        corpus: ``"librispeech"`` or ``"aishell"``.
        root: corpus root (LibriSpeech: the folder holding the subsets; AISHELL-1: the folder
            holding ``wav/`` and ``transcript/``).
        subsets_or_split: LibriSpeech subset(s) or AISHELL-1 split(s).
        tokenizer: the language model's tokenizer.
        language: ``"en"``/``"zh"``; default by corpus (LibriSpeech en, AISHELL-1 zh).
        unit_error: ``"fail"`` raises :class:`UnitError` listing the counts; ``"skip"`` drops
            the utterances with problems and logs how many.
        max_tokens: most units per utterance (the teacher's limit); default from
            ``tokenizer.model_max_length`` minus [CLS] and [SEP].

    Raises:
        CorpusError: see :mod:`.corpus`. UnitError: problems with ``fail``, or a split left
            empty by ``skip``. ValueError: unknown corpus, language or ``unit_error``.
    """
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {', '.join(CORPORA)}, got {corpus!r}")
    if unit_error not in UNIT_ERRORS:
        raise ValueError(f"unit_error must be one of {', '.join(UNIT_ERRORS)}, got {unit_error!r}")
    language = language or DEFAULT_LANGUAGE[corpus]
    names = _split_names(subsets_or_split)
    utterances = scan_librispeech(root, names) if corpus == "librispeech" else scan_aishell(root, names)
    if max_tokens is None:
        limit = int(getattr(tokenizer, "model_max_length", _NO_LIMIT) or _NO_LIMIT)
        max_tokens = limit - 2 if limit < _NO_LIMIT else None
    name = "+".join(names)
    kept, counts, examples, dropped = [], Counter(), {}, 0
    for utterance in utterances:
        units = transcript_units(utterance.text, tokenizer, language)
        if max_tokens is not None and len(units.units) > max_tokens:
            units.problems.append(f"{PROBLEM_TOO_LONG}: {len(units.units)} units > {max_tokens}")
        for problem in units.problems:
            kind = problem_kind(problem)
            counts[kind] += 1
            examples.setdefault(kind, [])
            if len(examples[kind]) < EXAMPLES_LOGGED:
                examples[kind].append(f"{utterance.id} ({problem.split(': ', 1)[-1]})")
        if units.ok:
            kept.append(PreparedItem(utterance, units))
        else:
            dropped += 1
    if counts:
        summary = "; ".join(f"{kind}: {count} (e.g. {', '.join(examples[kind])})" for kind, count in sorted(counts.items()))
        if unit_error == "fail":
            raise UnitError(f"{corpus} {name}: {dropped} of {len(utterances)} transcripts cannot be split into "
                            f"language-model units: {summary}; fix them or use unit_error=skip")
        logger.warning("%s %s: skipping %d of %d utterances whose transcripts cannot be split into "
                       "language-model units: %s", corpus, name, dropped, len(utterances), summary)
    if not kept:
        raise UnitError(f"{corpus} {name}: no utterance left after skipping {dropped} with unit problems")
    return PreparedSplit(name=name, corpus=corpus, language=language, items=kept,
                         problem_counts=dict(counts), dropped=dropped)


def load_audio(path: PathLike) -> Tensor:
    """Mono float32 samples (T,) at 16 kHz (channels averaged, other rates resampled)."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    wav = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1)))
    if rate != SAMPLE_RATE:
        import torchaudio.functional

        wav = torchaudio.functional.resample(wav, rate, SAMPLE_RATE)
    return wav


def _duration(path: PathLike) -> float:
    info = soundfile.info(str(path))
    return info.frames / info.samplerate


class CifAsrDataset(Dataset):
    """Utterances of a :class:`PreparedSplit` as training examples.

    Item: ``(wav (T,) float32 at 16 kHz, utt_id, target (N,) long unit indices without <eos>,
    lm_ids list of N ints, teacher vectors (N+1, D) float32 or None)``.

    Args:
        prepared: the split.
        vocab: unit vocabulary of the training split (unseen units become ``<unk>``).
        teacher_vectors: a feature cache holding every utterance (checked here), or None to
            compute teacher vectors on the fly from ``lm_ids``.
    """

    def __init__(self, prepared: PreparedSplit, vocab: UnitVocabulary,
                 teacher_vectors: Optional[FeatureCache] = None) -> None:
        self.prepared = prepared
        self.vocab = vocab
        self.teacher_vectors = teacher_vectors
        if teacher_vectors is not None:
            teacher_vectors.check(prepared.lm_items())
        self.targets = [torch.tensor(vocab.encode(item.units.units), dtype=torch.long) for item in prepared.items]
        unknown = sum(int((target == UNK).sum()) for target in self.targets)
        if unknown:
            logger.info("%s: %d target units not in the training vocabulary map to <unk>", prepared.name, unknown)
        self._durations: Optional[list[float]] = None

    def __len__(self) -> int:
        return len(self.prepared.items)

    @property
    def durations(self) -> list[float]:
        """Seconds per utterance, from the audio headers (read once, in threads)."""
        if self._durations is None:
            paths = [item.utterance.path for item in self.prepared.items]
            with ThreadPoolExecutor(max_workers=8) as pool:
                self._durations = list(pool.map(_duration, paths))
        return self._durations

    def __getitem__(self, index: int):
        item = self.prepared.items[index]
        teacher = None
        if self.teacher_vectors is not None:
            teacher = self.teacher_vectors.get(item.id)
            if teacher.shape[0] != len(item.units.units) + 1:
                raise FeatureCacheError(f"{item.id}: cached teacher vectors have {teacher.shape[0]} rows, the "
                                        f"transcript has {len(item.units.units)} units + [SEP]")
        return load_audio(item.utterance.path), item.id, self.targets[index], list(item.units.lm_ids), teacher


def collate(batch: Sequence[tuple]) -> tuple:
    """``(wavs, utt_ids, targets, lm_ids, teacher)``: lists; ``teacher`` is None unless every item has vectors."""
    wavs, utt_ids, targets, lm_ids, teacher = (list(column) for column in zip(*batch))
    return wavs, utt_ids, targets, lm_ids, (None if any(value is None for value in teacher) else teacher)


def make_dataloader(dataset: CifAsrDataset, batch_size: int, *, max_seconds: Optional[float] = None,
                    shuffle: bool = True, seed: int = 0, num_workers: int = 0, drop_last: bool = False,
                    epoch: Optional[int] = None) -> DataLoader:
    """A loader over length buckets (see :class:`~.sampler.DurationSortedBatchSampler`) with :func:`collate`.

    ``epoch`` fixes the shuffle of a loader built anew every epoch (S3PRL's runner passes it
    to ``get_dataloader`` when the expert accepts it); without it each iteration advances.
    """
    sampler = DurationSortedBatchSampler(dataset.durations, batch_size, max_seconds=max_seconds,
                                         shuffle=shuffle, seed=seed, drop_last=drop_last)
    if epoch is not None:
        sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
