"""Output units of the CIF recognizer and their vocabulary (rules: ``docs/cif.md``).

The targets are the language model's own tokens, so the teacher's vectors
``e_1..e_N, [SEP]`` (last layer, ``[CLS]`` dropped) line up one-to-one with the targets
``y_1..y_N, <eos>`` by construction:

* ``language="zh"`` (AISHELL-1 with a ``bert-base-chinese``-style tokenizer): one unit per
  character. Each WordPiece must cover exactly one character of the transcript; a piece that
  covers several (Latin words, digit runs) or is the unknown token is a per-utterance problem.
* ``language="en"`` (LibriSpeech with an uncased WordPiece tokenizer): the transcript's pieces;
  an unknown piece is a problem.

In both cases a unit is the piece string itself (``##`` kept), so a unit has exactly one
language-model id; :meth:`UnitVocabulary.words` strips the ``##`` for scoring.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

__all__ = [
    "BLANK", "PAD", "BOS", "EOS", "UNK", "SPECIALS", "NUM_SPECIALS", "LANGUAGES",
    "PROBLEM_UNKNOWN", "PROBLEM_MULTI_CHAR", "PROBLEM_LOST", "PROBLEM_TOO_LONG",
    "UnitSplit", "UnitVocabulary", "problem_kind", "tokenizer_fingerprint", "transcript_units",
]

PathLike = Union[str, os.PathLike]

BLANK = 0  # CTC blank
PAD = 1
BOS = 2
EOS = 3
UNK = 4
SPECIALS = ("<blank>", "<pad>", "<bos>", "<eos>", "<unk>")
NUM_SPECIALS = len(SPECIALS)
LANGUAGES = ("zh", "en")
CONTINUATION = "##"
VOCAB_FORMAT = "cif-asr-vocab/1"

# Problem kinds: a problem string is "<kind>: <detail>" so counts per kind are one split away.
PROBLEM_UNKNOWN = "unknown piece"
PROBLEM_MULTI_CHAR = "multi-character piece"
PROBLEM_LOST = "characters dropped by the tokenizer"
PROBLEM_TOO_LONG = "longer than the language model"


def problem_kind(problem: str) -> str:
    """The kind of a :attr:`UnitSplit.problems` entry (the text before the first colon)."""
    return problem.split(":", 1)[0]


@dataclass
class UnitSplit:
    """One transcript as units.

    Attributes:
        units: piece strings, one per target token (no specials).
        lm_ids: the language model's id of each unit (same length as ``units``).
        problems: ``"<kind>: <detail>"`` strings; an utterance with problems cannot be trained on.
    """

    units: list[str] = field(default_factory=list)
    lm_ids: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")


def _pieces_with_spans(text: str, tokenizer) -> tuple[list[str], list[int], list[tuple[int, int]] | None]:
    """(pieces, ids, character spans or None): spans only from fast tokenizers (offset mapping)."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        return tokenizer.convert_ids_to_tokens(ids), ids, [tuple(span) for span in encoded["offset_mapping"]]
    pieces = tokenizer.tokenize(text)
    return pieces, list(tokenizer.convert_tokens_to_ids(pieces)), None


def _zh_units(text: str, tokenizer) -> UnitSplit:
    pieces, ids, spans = _pieces_with_spans(text, tokenizer)
    unk = tokenizer.unk_token
    problems = []
    for number, piece in enumerate(pieces):
        # What the piece stands for in the transcript: the exact characters when offsets exist.
        covered = text[spans[number][0]:spans[number][1]] if spans is not None else None
        bare = piece[len(CONTINUATION):] if piece.startswith(CONTINUATION) else piece
        if piece == unk:
            problems.append(f"{PROBLEM_UNKNOWN}: {covered if covered is not None else piece!r}")
        elif (len(covered.strip()) if covered is not None else len(bare)) != 1:
            problems.append(f"{PROBLEM_MULTI_CHAR}: {piece!r}")
    characters = sum(1 for char in text if not char.isspace())
    if not problems and len(pieces) != characters:
        # e.g. control or unassigned characters the basic tokenizer removes silently.
        problems.append(f"{PROBLEM_LOST}: {characters} characters, {len(pieces)} pieces")
    return UnitSplit(units=list(pieces), lm_ids=ids, problems=problems)


def _en_units(text: str, tokenizer) -> UnitSplit:
    pieces, ids, spans = _pieces_with_spans(text, tokenizer)
    problems = []
    for number, piece in enumerate(pieces):
        if piece == tokenizer.unk_token:
            covered = text[spans[number][0]:spans[number][1]] if spans is not None else piece
            problems.append(f"{PROBLEM_UNKNOWN}: {covered!r}")
    return UnitSplit(units=list(pieces), lm_ids=ids, problems=problems)


def transcript_units(text: str, tokenizer, language: str) -> UnitSplit:
    """Split one transcript into units with the language model's tokenizer.

    Args:
        text: the transcript (AISHELL-1: words separated by spaces, which are ignored;
            LibriSpeech: upper-case words, lower-cased by an uncased tokenizer).
        tokenizer: a Hugging Face tokenizer (slow or fast; fast ones name the exact offending
            characters in problems).
        language: ``"zh"`` (one unit per character) or ``"en"`` (WordPiece pieces).

    Returns:
        :class:`UnitSplit`; an empty transcript gives no units and no problems.
    """
    _check_language(language)
    return _zh_units(text, tokenizer) if language == "zh" else _en_units(text, tokenizer)


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what decides the units: the piece -> id table, the special tokens, lower-casing.

    Computed from the tokenizer's content, not its files, so a slow and a fast tokenizer of the
    same vocabulary agree.
    """
    described = {
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0])),
        "special": {name: str(getattr(tokenizer, name, None))
                    for name in ("unk_token", "cls_token", "sep_token", "pad_token")},
        "lower": bool(getattr(tokenizer, "do_lower_case", False)),
    }
    return hashlib.sha256(json.dumps(described, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass
class UnitVocabulary:
    """Unit <-> index table of the recognizer's output layer.

    Indices 0-4 are the specials (:data:`SPECIALS`), real units start at 5 in ascending
    language-model id order (deterministic; the output layer covers only the units seen in the
    training transcripts, not the whole language-model vocabulary).

    Attributes:
        units: index -> unit string (specials included).
        lm_ids: index -> language-model id (``<bos>`` -> ``[CLS]``, ``<eos>`` -> ``[SEP]``,
            ``<pad>``/``<blank>`` -> the pad id, ``<unk>`` -> the unknown id).
        language: ``"zh"`` or ``"en"``.
        fingerprint: :func:`tokenizer_fingerprint` of the tokenizer the units come from.
        unknown_count: how many units :meth:`encode` mapped to ``<unk>`` so far (not saved).
    """

    units: list[str]
    lm_ids: list[int]
    language: str
    fingerprint: str
    unknown_count: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        _check_language(self.language)
        if len(self.units) != len(self.lm_ids):
            raise ValueError(f"{len(self.units)} units but {len(self.lm_ids)} language-model ids")
        if tuple(self.units[:NUM_SPECIALS]) != SPECIALS:
            raise ValueError(f"a unit vocabulary starts with {SPECIALS}, got {self.units[:NUM_SPECIALS]}")
        self._index = {unit: index for index, unit in enumerate(self.units)}
        if len(self._index) != len(self.units):
            duplicated = [unit for unit, count in Counter(self.units).items() if count > 1]
            raise ValueError(f"duplicate units in the vocabulary: {duplicated[:5]}")

    @classmethod
    def build(cls, splits: Iterable[UnitSplit], tokenizer, language: str) -> "UnitVocabulary":
        """From the training split's units (utterances with problems are ignored)."""
        seen: dict[str, int] = {}
        for split in splits:
            if split.ok:
                seen.update(zip(split.units, split.lm_ids))
        ordered = sorted(seen.items(), key=lambda item: (item[1], item[0]))
        pad, unk = tokenizer.pad_token_id, tokenizer.unk_token_id
        special_ids = [pad, pad, tokenizer.cls_token_id, tokenizer.sep_token_id, unk]
        if any(value is None for value in special_ids):
            raise ValueError("the tokenizer lacks one of the pad, [CLS], [SEP] or unknown tokens")
        return cls(
            units=list(SPECIALS) + [unit for unit, _ in ordered],
            lm_ids=[int(value) for value in special_ids] + [int(lm_id) for _, lm_id in ordered],
            language=language,
            fingerprint=tokenizer_fingerprint(tokenizer),
        )

    def __len__(self) -> int:
        return len(self.units)

    def index(self, unit: str) -> int:
        """Index of ``unit``, :data:`UNK` when it was not seen in training."""
        return self._index.get(unit, UNK)

    def encode(self, units: Sequence[str]) -> list[int]:
        """Unit strings -> indices; unseen units become :data:`UNK` and are counted."""
        indices = [self._index.get(unit, UNK) for unit in units]
        self.unknown_count += sum(1 for unit in units if unit not in self._index)
        return indices

    def decode(self, indices: Iterable[int]) -> list[str]:
        """Indices -> unit strings, specials dropped."""
        return [self.units[int(index)] for index in indices if NUM_SPECIALS <= int(index) < len(self.units)]

    def words(self, units: Sequence[str], language: str | None = None) -> list[str]:
        """Scoring tokens: ``en`` words (a ``##`` piece continues the previous word), ``zh`` characters."""
        language = language or self.language
        _check_language(language)
        if language == "zh":
            return [char for unit in units for char in unit.removeprefix(CONTINUATION) if not char.isspace()]
        words: list[str] = []
        for unit in units:
            if unit.startswith(CONTINUATION) and words:
                words[-1] += unit[len(CONTINUATION):]
            else:
                words.append(unit.removeprefix(CONTINUATION))
        return words

    def text(self, units: Sequence[str], language: str | None = None) -> str:
        """Scoring text: ``en`` words joined by spaces, ``zh`` characters joined without."""
        language = language or self.language
        return ("" if language == "zh" else " ").join(self.words(units, language))

    def to_dict(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "language": self.language, "fingerprint": self.fingerprint,
                "units": self.units, "lm_ids": self.lm_ids}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UnitVocabulary":
        if data.get("format") != VOCAB_FORMAT:
            raise ValueError(f"not a CIF unit vocabulary (format {data.get('format')!r}, expected {VOCAB_FORMAT!r})")
        return cls(units=list(data["units"]), lm_ids=[int(value) for value in data["lm_ids"]],
                   language=data["language"], fingerprint=data["fingerprint"])

    def save(self, path: PathLike) -> Path:
        """Write ``vocab.json`` (``path`` may be the file or its folder); atomic."""
        target = Path(path)
        if target.is_dir():
            target = target / "vocab.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(temporary, target)
        return target

    @classmethod
    def load(cls, path: PathLike) -> "UnitVocabulary":
        """Read a file written by :meth:`save` (``path`` may be the file or its folder)."""
        source = Path(path)
        if source.is_dir():
            source = source / "vocab.json"
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no unit vocabulary at {source}") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not JSON ({error})") from None
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None
