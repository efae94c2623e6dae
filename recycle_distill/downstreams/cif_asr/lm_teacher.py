"""The frozen language model whose token vectors HieraDist distils (``docs/cif.md``).

A local Hugging Face folder (``bert-base-chinese``, ``bert-base-uncased`` or a tiny test
model), loaded offline. For an utterance with language-model ids ``t_1..t_N`` it returns the
last layer over ``[CLS] t_1..t_N [SEP]`` without the ``[CLS]`` row: ``e_1..e_N, e_[SEP]``,
one row per target ``y_1..y_N, <eos>``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["LanguageModelTeacher", "TeacherError", "FINGERPRINT_FILES"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# Files whose bytes decide the vectors: tokenizer tables, model config and weights.
FINGERPRINT_FILES = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "*.model",
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
)
_HASH_CHUNK = 1 << 20


class TeacherError(ValueError):
    """The language-model folder is missing, not a Hugging Face model, or an input does not fit."""


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise TeacherError(
            "the language-model teacher needs Hugging Face transformers: pip install 'recycle-distill[hf]'"
        ) from None
    return transformers


def _fingerprint_files(folder: Path) -> list[Path]:
    names = sorted(path.name for path in folder.iterdir() if path.is_file())
    return [folder / name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in FINGERPRINT_FILES)]


def folder_fingerprint(folder: PathLike) -> str:
    """sha256 over the names and bytes of the tokenizer, config and weight files of ``folder``."""
    digest = hashlib.sha256()
    for path in _fingerprint_files(Path(folder)):
        digest.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _model_folder(path: PathLike) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise TeacherError(f"language-model folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise TeacherError(f"{folder} is not a Hugging Face model folder (no config.json)")
    return folder


@contextlib.contextmanager
def _load_errors(folder: Path):
    """transformers' loading errors, re-raised as one-line :class:`TeacherError` naming the folder."""
    try:
        yield
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TeacherError(f"cannot load a Hugging Face model from {folder}: {first_line}") from None


def load_tokenizer(path: PathLike):
    """The tokenizer of a local Hugging Face model folder, offline, without loading the model.

    Raises:
        TeacherError: missing folder, no ``config.json``, a folder transformers cannot load,
            or transformers not installed.
    """
    folder = _model_folder(path)
    transformers = _import_transformers()
    with _load_errors(folder):
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


class LanguageModelTeacher:
    """A frozen BERT-style encoder in eval mode and its tokenizer.

    Attributes:
        path: the model folder.
        model: the ``transformers`` model (no gradients, eval mode).
        tokenizer: its tokenizer.
        hidden_size: width D of the returned vectors.
        max_tokens: the most units an utterance may have (max positions minus [CLS] and [SEP]).
    """

    def __init__(self, path: Path, model: torch.nn.Module, tokenizer) -> None:
        self.path = path
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.hidden_size = int(model.config.hidden_size)
        max_positions = int(getattr(model.config, "max_position_embeddings", 512))
        self.max_tokens = max_positions - 2
        self._fingerprint: Optional[str] = None

    @classmethod
    def from_dir(cls, path: PathLike, device: Union[str, torch.device] = "cpu") -> "LanguageModelTeacher":
        """Load a local Hugging Face model folder offline (``local_files_only``).

        Raises:
            TeacherError: see :func:`load_tokenizer`.
        """
        folder = _model_folder(path)
        tokenizer = load_tokenizer(folder)
        with _load_errors(folder):
            model = _import_transformers().AutoModel.from_pretrained(str(folder), local_files_only=True)
        teacher = cls(folder, model.to(device), tokenizer)
        logger.info("language-model teacher %s: %s, hidden %d, up to %d tokens",
                    folder, type(model).__name__, teacher.hidden_size, teacher.max_tokens)
        return teacher

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> str:
        """sha256 of the tokenizer files and the model config + weights (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = folder_fingerprint(self.path)
        return self._fingerprint

    def _check_lengths(self, lm_id_seqs: Sequence[Sequence[int]], names: Optional[Sequence[str]]) -> None:
        for number, ids in enumerate(lm_id_seqs):
            if len(ids) > self.max_tokens:
                name = names[number] if names is not None else f"sequence {number}"
                raise TeacherError(
                    f"{name}: {len(ids)} tokens, but the language model {self.path} takes at most "
                    f"{self.max_tokens} (+ [CLS] and [SEP])"
                )

    def vectors(self, lm_id_seqs: Sequence[Sequence[int]], names: Optional[Sequence[str]] = None,
                batch_size: int = 64) -> list[Tensor]:
        """Last-layer vectors without ``[CLS]``, one tensor per utterance.

        Runs under ``torch.no_grad()``, not ``inference_mode``: the vectors become targets of
        a loss whose backward saves them.

        Args:
            lm_id_seqs: per utterance the ids ``t_1..t_N`` (no [CLS]/[SEP]).
            names: utterance ids for error messages.
            batch_size: sequences per forward pass (sorted by length to limit padding).

        Returns:
            per utterance a float32 tensor (N+1, D) on the model's device: ``e_1..e_N, e_[SEP]``.
        """
        self._check_lengths(lm_id_seqs, names)
        tokenizer = self.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        order = sorted(range(len(lm_id_seqs)), key=lambda number: len(lm_id_seqs[number]))
        results: list[Optional[Tensor]] = [None] * len(lm_id_seqs)
        device = self.device
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chosen = order[start:start + batch_size]
                rows = [[tokenizer.cls_token_id, *map(int, lm_id_seqs[n]), tokenizer.sep_token_id] for n in chosen]
                width = max(len(row) for row in rows)
                ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for row_number, row in enumerate(rows):
                    ids[row_number, :len(row)] = torch.tensor(row)
                    mask[row_number, :len(row)] = 1
                hidden = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
                for row_number, n in enumerate(chosen):
                    # Row 0 is [CLS]; rows 1..N+1 are the tokens and [SEP].
                    results[n] = hidden[row_number, 1:len(rows[row_number])].to(torch.float32, copy=True)
        return results  # type: ignore[return-value]
