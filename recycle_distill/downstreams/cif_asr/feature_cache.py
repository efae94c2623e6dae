"""On-disk cache of the language-model teacher's vectors, written by ``recycle-distill cif-prepare``.

Layout of a cache folder::

    index.json                   format, teacher fingerprint, language, dtype, width, shards,
                                 and per utterance: shard, key, shape, hash of its LM ids
    shard-00000.safetensors      one tensor (N+1, D) per utterance, keyed by utterance id
    ...

Writing is crash-safe: a shard is written to a hidden temporary file and renamed into place,
then the index is rewritten the same way, so a killed build leaves only complete shards that
the next build reuses (a shard the index does not list yet is deleted and recomputed). A cache
whose fingerprint (tokenizer + model files), format or dtype differs from the current teacher's
is never reused: :func:`build_cache` deletes its own files in that folder and rebuilds, and
:meth:`FeatureCache.open` refuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["CACHE_FORMAT", "CacheBuildReport", "FeatureCache", "FeatureCacheError", "build_cache", "lm_ids_hash"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

CACHE_FORMAT = "cif-asr-feature-cache/1"
INDEX = "index.json"
SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.safetensors$")
TEMP_PREFIX = ".tmp-"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RERUN_HINT = "re-run `recycle-distill cif-prepare`"


class FeatureCacheError(ValueError):
    """A cache is missing, built for another teacher, or lacks an utterance."""


def lm_ids_hash(lm_ids: Sequence[int]) -> str:
    """Short hash of one utterance's language-model ids (detects a changed transcript)."""
    return hashlib.sha1(",".join(str(int(value)) for value in lm_ids).encode("ascii")).hexdigest()[:16]


def _dtype_name(dtype: Union[str, torch.dtype]) -> str:
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    return name


def _read_index(folder: Path) -> Optional[dict[str, Any]]:
    """The index, or None when absent; an unreadable index counts as a foreign cache."""
    path = folder / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"format": "unreadable"}
    return index if isinstance(index, dict) else {"format": "unreadable"}


def _write_atomic_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f"{TEMP_PREFIX}{path.name}")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _own_files(folder: Path) -> list[Path]:
    """Files this module writes in ``folder``: the index, shards and temporaries, nothing else."""
    return [path for path in folder.iterdir() if path.is_file() and (
        path.name == INDEX or SHARD_PATTERN.match(path.name) or path.name.startswith(TEMP_PREFIX))]


@dataclass
class CacheBuildReport:
    """What :func:`build_cache` did.

    Attributes:
        folder: the cache folder.
        fingerprint: the teacher fingerprint the cache now holds.
        computed: utterances whose vectors were computed now.
        reused: utterances already in the cache (same ids).
        shards_written: new shards.
        rebuilt: True when an incompatible cache in the folder was deleted first.
        previous_fingerprint: that cache's fingerprint (or format), when rebuilt.
    """

    folder: Path
    fingerprint: str
    computed: int = 0
    reused: int = 0
    shards_written: int = 0
    rebuilt: bool = False
    previous_fingerprint: Optional[str] = None


def _empty_index(teacher, language: Optional[str], dtype: str) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "fingerprint": teacher.fingerprint, "language": language, "dtype": dtype,
            "hidden_size": teacher.hidden_size, "shards": [], "entries": {}}


def _compatible(index: dict[str, Any], fingerprint: str, dtype: str) -> bool:
    return (index.get("format") == CACHE_FORMAT and index.get("fingerprint") == fingerprint
            and index.get("dtype") == dtype)


def build_cache(folder: PathLike, items: Iterable[tuple[str, Sequence[int]]], teacher, *,
                shard_size: int = 1000, batch_size: int = 32, language: Optional[str] = None,
                dtype: Union[str, torch.dtype] = "float32", progress: bool = True) -> CacheBuildReport:
    """Compute the teacher vectors of ``items`` into ``folder``; resumable and crash-safe.

    Args:
        folder: cache folder (created). Only ``index.json``, ``shard-*.safetensors`` and hidden
            temporaries in it are ever written or deleted.
        items: ``(utterance id, language-model ids)`` pairs; ids must be unique. Utterances
            already cached with the same ids are reused; cached utterances not in ``items``
            are kept (one cache can hold several splits).
        teacher: a :class:`~.lm_teacher.LanguageModelTeacher` (``vectors``, ``fingerprint``,
            ``hidden_size``).
        shard_size: utterances per shard (the unit of resumption).
        batch_size: sequences per teacher forward pass.
        language: recorded in the index.
        dtype: storage dtype (``float16`` halves the size; :meth:`FeatureCache.get` returns float32).
        progress: show a tqdm bar.

    Returns:
        :class:`CacheBuildReport`.
    """
    from safetensors.torch import save_file

    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    dtype_name = _dtype_name(dtype)
    items = [(str(utt_id), [int(value) for value in ids]) for utt_id, ids in items]
    seen: set[str] = set()
    for utt_id, _ in items:
        if utt_id in seen:
            raise FeatureCacheError(f"utterance id {utt_id} appears twice in the items for {base}")
        seen.add(utt_id)
    for path in base.iterdir():  # leftovers of a killed build: never complete, never listed
        if path.is_file() and path.name.startswith(TEMP_PREFIX):
            path.unlink()

    report = CacheBuildReport(folder=base, fingerprint=teacher.fingerprint)
    index = _read_index(base)
    if index is not None and not _compatible(index, teacher.fingerprint, dtype_name):
        report.rebuilt = True
        report.previous_fingerprint = str(index.get("fingerprint") or index.get("format"))
        logger.warning("feature cache %s was built with fingerprint %s (dtype %s, format %s), the teacher has %s: "
                       "deleting its shards and rebuilding", base, index.get("fingerprint"), index.get("dtype"),
                       index.get("format"), teacher.fingerprint)
        for path in _own_files(base):
            path.unlink()
        index = None
    if index is None:
        index = _empty_index(teacher, language, dtype_name)
    index["language"] = language if language is not None else index.get("language")
    listed = set(index["shards"])
    for path in base.iterdir():  # renamed into place but killed before the index listed it
        if SHARD_PATTERN.match(path.name) and path.name not in listed:
            path.unlink()

    entries: dict[str, dict[str, Any]] = index["entries"]
    todo = []
    for utt_id, ids in items:
        entry = entries.get(utt_id)
        if entry is not None and entry.get("ids") == lm_ids_hash(ids):
            report.reused += 1
        else:
            todo.append((utt_id, ids))
    numbers = [int(SHARD_PATTERN.match(name).group(1)) for name in index["shards"]]
    next_number = max(numbers, default=-1) + 1
    torch_dtype = DTYPES[dtype_name]
    bar = tqdm(total=len(items), initial=report.reused, desc="teacher vectors", unit="utt", disable=not progress)
    try:
        for start in range(0, len(todo), max(1, shard_size)):
            chunk = todo[start:start + max(1, shard_size)]
            by_length = sorted(chunk, key=lambda item: len(item[1]))  # batches of similar length pad less
            tensors: dict[str, Tensor] = {}
            for batch_start in range(0, len(by_length), max(1, batch_size)):
                batch = by_length[batch_start:batch_start + max(1, batch_size)]
                vectors = teacher.vectors([ids for _, ids in batch], names=[utt_id for utt_id, _ in batch],
                                          batch_size=max(1, batch_size))
                for (utt_id, _), value in zip(batch, vectors):
                    tensors[utt_id] = value.detach().to("cpu", torch_dtype).contiguous()
                bar.update(len(batch))
            name = f"shard-{next_number:05d}.safetensors"
            next_number += 1
            temporary = base / f"{TEMP_PREFIX}{name}"
            save_file(tensors, str(temporary), metadata={"format": CACHE_FORMAT, "fingerprint": teacher.fingerprint})
            os.replace(temporary, base / name)
            index["shards"].append(name)
            for utt_id, ids in chunk:
                entries[utt_id] = {"shard": name, "key": utt_id, "shape": list(tensors[utt_id].shape),
                                   "ids": lm_ids_hash(ids)}
            _write_atomic_json(base / INDEX, index)
            report.computed += len(chunk)
            report.shards_written += 1
    finally:
        bar.close()
    if not report.shards_written and not (base / INDEX).is_file():
        _write_atomic_json(base / INDEX, index)  # an empty but valid cache
    logger.info("feature cache %s: %d computed, %d reused, %d new shards", base, report.computed,
                report.reused, report.shards_written)
    return report


class FeatureCache:
    """Read access to a cache folder for one teacher fingerprint.

    Attributes:
        folder: the cache folder.
        fingerprint: the teacher fingerprint it was built with.
        language, hidden_size, dtype: from the index.
    """

    def __init__(self, folder: Path, index: dict[str, Any]) -> None:
        self.folder = folder
        self.fingerprint: str = index["fingerprint"]
        self.language: Optional[str] = index.get("language")
        self.hidden_size: int = int(index["hidden_size"])
        self.dtype: str = index["dtype"]
        self._entries: dict[str, dict[str, Any]] = index["entries"]
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        # Open shard handles cannot cross into spawned data-loader workers; they reopen lazily.
        return {**self.__dict__, "_handles": {}}

    @classmethod
    def open(cls, folder: PathLike, fingerprint: str) -> "FeatureCache":
        """Open a cache built for the teacher with ``fingerprint``.

        Raises:
            FeatureCacheError: no cache in ``folder``, or one built with another tokenizer/model.
        """
        base = Path(folder)
        index = _read_index(base)
        if index is None:
            raise FeatureCacheError(f"no feature cache in {base} (no {INDEX}); {RERUN_HINT}")
        if index.get("format") != CACHE_FORMAT:
            raise FeatureCacheError(f"feature cache {base} has format {index.get('format')!r}, "
                                    f"expected {CACHE_FORMAT!r}; {RERUN_HINT}")
        if index.get("fingerprint") != fingerprint:
            raise FeatureCacheError(
                f"feature cache {base} was built with tokenizer/model fingerprint {index.get('fingerprint')} "
                f"but the language model has {fingerprint}; {RERUN_HINT} with this model to rebuild it")
        return cls(base, index)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._entries

    @property
    def ids(self) -> list[str]:
        return sorted(self._entries)

    def check(self, items: Iterable[tuple[str, Sequence[int]]]) -> None:
        """Every ``(utterance id, LM ids)`` is cached with the same ids, else one error with counts."""
        missing, stale = [], []
        for utt_id, ids in items:
            entry = self._entries.get(utt_id)
            if entry is None:
                missing.append(utt_id)
            elif entry.get("ids") != lm_ids_hash(ids):
                stale.append(utt_id)
        if missing or stale:
            parts = []
            if missing:
                parts.append(f"{len(missing)} utterances missing (e.g. {', '.join(missing[:3])})")
            if stale:
                parts.append(f"{len(stale)} with other transcripts (e.g. {', '.join(stale[:3])})")
            raise FeatureCacheError(f"feature cache {self.folder}: {'; '.join(parts)}; {RERUN_HINT} for these splits")

    def _handle(self, shard: str):
        from safetensors import safe_open

        if os.getpid() != self._pid:  # a forked data-loader worker opens its own handles
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.folder / shard), framework="pt")
        return self._handles[shard]

    def get(self, utt_id: str) -> Tensor:
        """The vectors (N+1, D) of one utterance, float32 on the CPU."""
        entry = self._entries.get(utt_id)
        if entry is None:
            raise FeatureCacheError(f"utterance {utt_id} is not in the feature cache {self.folder}; {RERUN_HINT}")
        return self._handle(entry["shard"]).get_tensor(entry["key"]).to(torch.float32)
