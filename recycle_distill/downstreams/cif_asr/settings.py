"""The ``downstream_expert:`` section of ``cif_asr.yaml``: corpus, language model, batching, and
the recognizer's ``model`` / ``loss`` / ``decode`` sections (:mod:`.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from recycle_distill.downstreams.cif_asr.config import (
    CifAsrConfig,
    CifConfigError,
    _build,
    _positive_int,
    _require,
    _suggest,
)
from recycle_distill.downstreams.cif_asr.dataset import CORPORA, UNIT_ERRORS

__all__ = ["CorpusSettings", "LanguageModelSettings", "DataSettings", "ExpertSettings"]


def _as_list(text: str) -> list:
    """``"a"``, ``"a,b"`` or ``"[a, b]"`` (how S3PRL's ``-o`` hands over an unquoted list) -> names."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return [part.strip().strip("'\"") for part in inner.split(",") if part.strip()]


@dataclass
class CorpusSettings:
    """Where the audio and transcripts are.

    Attributes:
        name: ``librispeech`` or ``aishell``.
        root: LibriSpeech: the folder holding the subsets; AISHELL-1: the folder holding
            ``wav/`` and ``transcript/``.
        train, dev, test: the subsets (LibriSpeech, e.g. ``[train-clean-100]``) or splits
            (AISHELL-1: ``[train]``) behind S3PRL's split names.
        language: ``en`` or ``zh``; by default LibriSpeech is English and AISHELL-1 Chinese.
        unit_error: a transcript unit the language model's tokenizer splits or does not know:
            ``skip`` the utterance (counted and logged) or ``fail`` before training.
    """

    name: str = "librispeech"
    root: str = ""
    train: list = field(default_factory=lambda: ["train-clean-100"])
    dev: list = field(default_factory=lambda: ["dev-clean"])
    test: list = field(default_factory=lambda: ["test-clean"])
    language: Optional[str] = None
    unit_error: str = "skip"

    def check(self, section: str) -> None:
        _require(self.name in CORPORA, section, "name", self.name, f"one of {', '.join(CORPORA)}")
        _require(isinstance(self.root, str) and bool(self.root), section, "root", self.root,
                 "the corpus folder (set it with -o config.downstream_expert.corpus.root=...)")
        _require(self.unit_error in UNIT_ERRORS, section, "unit_error", self.unit_error, f"one of {', '.join(UNIT_ERRORS)}")
        _require(self.language in (None, "en", "zh"), section, "language", self.language, "en, zh or null")
        for split in ("train", "dev", "test"):
            value = getattr(self, split)
            if isinstance(value, str):
                value = _as_list(value)
                setattr(self, split, value)
            _require(isinstance(value, list) and all(isinstance(v, str) for v in value) and value,
                     section, split, value, "a non-empty list of subset names")

    def subsets(self, split: str) -> list:
        """The corpus subsets behind an S3PRL split name (``train``, ``dev``, ``test``)."""
        if split not in ("train", "dev", "test"):
            raise CifConfigError(f"unknown split {split!r}: cif_asr has train, dev and test "
                                 "(use those names in runner.eval_dataloaders and -t)")
        return getattr(self, split)


@dataclass
class LanguageModelSettings:
    """The language model whose tokens are the targets and whose vectors are distilled.

    Attributes:
        path: a local Hugging Face model folder (``AutoModel`` + ``AutoTokenizer``, offline).
        feature_cache: a ``recycle-distill cif-prepare`` cache folder; ``null`` computes the
            vectors on the fly (only when ACD or LRD is on).
        batch_size: sequences per language-model pass when computing on the fly.
    """

    path: str = ""
    feature_cache: Optional[str] = None
    batch_size: int = 64

    def check(self, section: str) -> None:
        _require(isinstance(self.path, str) and bool(self.path), section, "path", self.path,
                 "a local Hugging Face model folder (its tokenizer defines the units)")
        _positive_int(self, section, "batch_size")


@dataclass
class DataSettings:
    """Batching. ``max_seconds`` caps the audio of a batch (None: only ``batch_size`` counts)."""

    batch_size: int = 8
    eval_batch_size: int = 8
    max_seconds: Optional[float] = None
    num_workers: int = 0
    seed: int = 0

    def check(self, section: str) -> None:
        _positive_int(self, section, "batch_size", "eval_batch_size")
        _require(isinstance(self.num_workers, int) and self.num_workers >= 0, section, "num_workers",
                 self.num_workers, "an integer >= 0")
        _require(self.max_seconds is None or (isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0),
                 section, "max_seconds", self.max_seconds, "null or a number of seconds > 0")


@dataclass
class ExpertSettings:
    corpus: CorpusSettings
    lm: LanguageModelSettings
    data: DataSettings
    recognizer: CifAsrConfig

    SECTIONS = ("corpus", "lm", "data", "model", "loss", "decode")

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "ExpertSettings":
        data = dict(data or {})
        prefix = "downstream_expert"
        for key in data:
            if key not in cls.SECTIONS:
                raise CifConfigError(f"{prefix}.{key}: unknown section{_suggest(str(key), list(cls.SECTIONS))}")
        return cls(
            corpus=_build(CorpusSettings, f"{prefix}.corpus", data.get("corpus")),
            lm=_build(LanguageModelSettings, f"{prefix}.lm", data.get("lm")),
            data=_build(DataSettings, f"{prefix}.data", data.get("data")),
            recognizer=CifAsrConfig.from_dict({k: data[k] for k in ("model", "loss", "decode") if k in data}),
        )
