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

The index is the cache's marker: a new cache writes it (empty) before its first shard, and its
``format`` (``cif-asr-feature-cache/<version>``) is how a folder is recognised as ours, by this
version as by the earlier ones.  :func:`build_cache` deletes only in such a folder, and only its
own files; a folder holding another ``index.json`` (or none, but files named like our shards or
temporaries) is refused with what is in it.  Nothing in an index is trusted: every key is checked
when a cache is opened (a shard is a ``shard-NNNNN.safetensors`` name listed in ``shards``, so it
stays inside the cache), and every vector :meth:`FeatureCache.get` returns is checked for dtype,
shape and finiteness; each problem is one line naming the file and the key. Reading and checking
the index is :mod:`recycle_distill.downstreams.cif_asr.feature_cache_index`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from recycle_distill.downstreams.cif_asr.feature_cache_index import (
    CACHE_FORMAT,
    DTYPES,
    INDEX,
    SHARD_PATTERN,
    TEMP_PREFIX,
    FeatureCacheError,
    check_index,
    check_inside,
    damaged,
    own_index,
    read_index,
)
from recycle_distill.util.atomic import atomic_write, check_output_folder, default_mode
from recycle_distill.util.messages import plain, short_repr

__all__ = ["CACHE_FORMAT", "CacheBuildReport", "FeatureCache", "FeatureCacheError", "build_cache", "lm_ids_hash"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

RERUN_HINT = "re-run `recycle-distill cif-prepare`"


def lm_ids_hash(lm_ids: Sequence[int]) -> str:
    """Short hash of one utterance's language-model ids (detects a changed transcript)."""
    return hashlib.sha1(",".join(str(int(value)) for value in lm_ids).encode("ascii")).hexdigest()[:16]


def _dtype_name(dtype: Union[str, torch.dtype]) -> str:
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    return name


def _write_atomic_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON through the package's one atomic writer; the temp file's ``TEMP_PREFIX``
    name is what lets a later build recognise one left by a killed run as ours."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False)

    atomic_write(path, write, prefix=TEMP_PREFIX, fsync=True)


def _write_failed(folder: Path, name: str, error: BaseException) -> FeatureCacheError:
    """A shard or index write that failed (a full disk, a read-only mount), as one line."""
    reason = getattr(error, "strerror", None) or " ".join(str(error).split())
    return FeatureCacheError(f"feature cache {plain(folder)}: could not write {name} ({plain(reason, 200)}); "
                             "the cache keeps the shards it had: run the same command again once the cause is fixed")


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
    created = check_output_folder(base) is None  # refuses a file, a device, a FIFO at --cache
    base.mkdir(parents=True, exist_ok=True)
    dtype_name = _dtype_name(dtype)
    items = [(str(utt_id), [int(value) for value in ids]) for utt_id, ids in items]
    seen: set[str] = set()
    for utt_id, _ in items:
        if utt_id in seen:
            raise FeatureCacheError(f"utterance id {utt_id} appears twice in the items for {base}")
        seen.add(utt_id)
    report = CacheBuildReport(folder=base, fingerprint=teacher.fingerprint)
    index = own_index(base)  # refuses (deleting nothing) a folder that is not a cache of ours
    if index is not None and index.get("format") == CACHE_FORMAT:
        check_index(base / INDEX, index)
    for path in base.iterdir():  # leftovers of a killed build: never complete, never listed
        if path.is_file() and path.name.startswith(TEMP_PREFIX):
            path.unlink()
    if index is not None and not _compatible(index, teacher.fingerprint, dtype_name):
        report.rebuilt = True
        previous = index.get("fingerprint") or index.get("format")
        report.previous_fingerprint = previous if isinstance(previous, str) and len(previous) <= 200 \
            and previous.isprintable() else short_repr(previous)
        logger.warning("feature cache %s was built with fingerprint %s (dtype %s, format %s), the teacher has %s: "
                       "deleting its shards and rebuilding", base, short_repr(index.get("fingerprint")),
                       short_repr(index.get("dtype")), short_repr(index.get("format")), teacher.fingerprint)
        for path in _own_files(base):
            path.unlink()
        index = None
    if index is None:
        index = _empty_index(teacher, language, dtype_name)
        try:
            _write_atomic_json(base / INDEX, index)  # the marker, before the first shard
        except (OSError, ValueError) as error:
            if created:
                shutil.rmtree(base, ignore_errors=True)  # the folder this call made, holding nothing else
            raise _write_failed(base, INDEX, error) from error
    recorded = index.get("language")
    index["language"] = language if language is not None else recorded
    listed = set(index["shards"])
    for name in sorted(listed):  # reused shards are read by training: none may lead out of the cache
        check_inside(base, base / name)
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
            # The shard, then the index that lists it: a failure in between takes the shard out
            # again, so the folder keeps exactly the cache it held before this shard.
            writing = name
            try:
                save_file(tensors, str(temporary), metadata={"format": CACHE_FORMAT,
                                                             "fingerprint": teacher.fingerprint})
                os.chmod(temporary, default_mode())  # safetensors writes 0o600; shards follow the umask (issue 20)
                os.replace(temporary, base / name)
                index["shards"].append(name)
                for utt_id, ids in chunk:
                    entries[utt_id] = {"shard": name, "key": utt_id, "shape": list(tensors[utt_id].shape),
                                       "ids": lm_ids_hash(ids)}
                writing = INDEX
                _write_atomic_json(base / INDEX, index)
            except BaseException as error:
                temporary.unlink(missing_ok=True)
                (base / name).unlink(missing_ok=True)
                if isinstance(error, OSError) or type(error).__name__ == "SafetensorError":
                    raise _write_failed(base, writing, error) from error
                raise
            report.computed += len(chunk)
            report.shards_written += 1
    finally:
        bar.close()
    if not report.shards_written and index["language"] != recorded:
        _write_atomic_json(base / INDEX, index)  # a build that reused everything still records its language
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
        index = read_index(base)
        if index is None:
            raise FeatureCacheError(f"no feature cache in {base} (no {INDEX}); {RERUN_HINT}")
        if index.get("format") != CACHE_FORMAT:
            raise FeatureCacheError(f"feature cache {base} has format {short_repr(index.get('format'))}, "
                                    f"expected {CACHE_FORMAT!r}; {RERUN_HINT}")
        check_index(base / INDEX, index)
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
            path = self.folder / shard  # a plain shard name (checked when the index was opened)
            check_inside(self.folder, path)
            try:
                self._handles[shard] = safe_open(str(path), framework="pt")
            except Exception as error:  # noqa: BLE001  (safetensors raises its own error types)
                raise damaged(path, "cannot be read", f"({type(error).__name__}: "
                                                       f"{short_repr(' '.join(str(error).split()), 200)})") from None
        return self._handles[shard]

    def get(self, utt_id: str) -> Tensor:
        """The vectors (N+1, D) of one utterance, float32 on the CPU.

        Raises FeatureCacheError, naming the shard and the key, when the vectors are missing or do
        not have the cache's dtype, the shape the index records, or finite values.
        """
        entry = self._entries.get(utt_id)
        if entry is None:
            raise FeatureCacheError(f"utterance {utt_id} is not in the feature cache {self.folder}; {RERUN_HINT}")
        handle = self._handle(entry["shard"])
        path, key = self.folder / entry["shard"], entry["key"]
        name = f"vectors {short_repr(key)}"
        if key not in handle.keys():
            raise damaged(path, name, "are missing")
        try:
            vectors = handle.get_tensor(key)
        except Exception as error:  # noqa: BLE001
            raise damaged(path, name, f"cannot be read ({type(error).__name__})") from None
        if vectors.dtype != DTYPES[self.dtype]:
            raise damaged(path, name, f"have dtype {str(vectors.dtype).removeprefix('torch.')}; "
                                       f"the cache holds {self.dtype}")
        if list(vectors.shape) != entry["shape"]:
            raise damaged(path, name, f"have shape {tuple(vectors.shape)}; the index records "
                                       f"{tuple(entry['shape'])} (hidden_size {self.hidden_size})")
        vectors = vectors.to(torch.float32)
        if not bool(torch.isfinite(vectors).all()):
            raise damaged(path, name, "hold NaN or infinite values")
        return vectors
