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
shape and finiteness; each problem is one line naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from recycle_distill.util.atomic import check_output_folder, default_mode, listing
from recycle_distill.util.messages import plain, short_repr

__all__ = ["CACHE_FORMAT", "CacheBuildReport", "FeatureCache", "FeatureCacheError", "build_cache", "lm_ids_hash"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

CACHE_FORMAT = "cif-asr-feature-cache/1"
FORMAT_FAMILY = "cif-asr-feature-cache/"  # every version of our index format starts so
INDEX = "index.json"
SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.safetensors$")
SHARD_NAME = re.compile(r"shard-(\d{5,9})\.safetensors")  # what an index may name (fullmatch)
TEMP_PREFIX = ".tmp-"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RERUN_HINT = "re-run `recycle-distill cif-prepare`"
DAMAGED_HINT = "re-run `recycle-distill cif-prepare` with a new --cache folder"
MAX_HIDDEN = 1 << 16  # widest hidden size an index may declare
MAX_ROWS = 1_000_000  # most vectors (units + 1) one utterance may declare
LISTED = 5  # entries a refusal names before "and N more"


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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return {"format": "unreadable"}
    return index if isinstance(index, dict) else {"format": "unreadable"}


def _is_ours(index: dict[str, Any]) -> bool:
    """True for an index of our format family (any version)."""
    return isinstance(index.get("format"), str) and index["format"].startswith(FORMAT_FAMILY)


def _own_index(folder: Path) -> Optional[dict[str, Any]]:
    """The index of the cache in ``folder``; None when the folder holds no cache and nothing that
    looks like one (a new cache may be made there).

    Raises FeatureCacheError, deleting nothing, for a folder that is not ours: one holding an
    ``index.json`` of another format (or not JSON), or none but files named like our shards or
    temporaries (which a build would delete).
    """
    path = folder / INDEX
    if not (path.exists() or path.is_symlink()):
        if any(entry.name == INDEX or SHARD_PATTERN.match(entry.name) or entry.name.startswith(TEMP_PREFIX)
               for entry in folder.iterdir()):
            raise _foreign(folder, "it has no index.json but holds files named like a cache's shards or temporaries")
        return None
    if path.is_symlink() or not path.is_file():
        raise _foreign(folder, "its index.json is not a regular file")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        raise _foreign(folder, "its index.json is not readable JSON") from None
    if not isinstance(index, dict) or not _is_ours(index):
        raise _foreign(folder, f"its index.json has no 'format': {CACHE_FORMAT!r}")
    return index


def _foreign(folder: Path, why: str) -> FeatureCacheError:
    """The refusal of a folder that is not a cache of ours, naming (bounded) what is in it."""
    names = sorted(entry.name for entry in folder.iterdir())
    return FeatureCacheError(f"{plain(folder)} is not a recycle-distill feature cache ({why}) and holds "
                             f"{listing(names, LISTED)}; nothing was deleted: give --cache a new or empty folder")


def _damaged(path: Path, key: str, problem: str) -> FeatureCacheError:
    return FeatureCacheError(f"feature cache {plain(path)}: {key} {problem}; {DAMAGED_HINT}")


def _check_inside(folder: Path, path: Path) -> None:
    """Refuse a shard that is a symlink leading out of the cache folder."""
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(folder):
        raise _damaged(path, "leads outside the cache folder", f"(it resolves to {plain(real)})")


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_index(path: Path, index: dict[str, Any]) -> None:
    """Raise FeatureCacheError naming ``path`` and the first key of ``index`` that is missing,
    of the wrong type, out of range, or names a shard outside the cache."""

    def need(key: str) -> Any:
        if key not in index:
            raise _damaged(path, key, "is missing")
        return index[key]

    if not isinstance(need("fingerprint"), str):
        raise _damaged(path, "fingerprint", f"must be a string, got {short_repr(index['fingerprint'])}")
    language = index.get("language")
    if language is not None and not isinstance(language, str):
        raise _damaged(path, "language", f"must be a string or null, got {short_repr(language)}")
    if need("dtype") not in DTYPES or not isinstance(index["dtype"], str):
        raise _damaged(path, "dtype", f"must be one of {', '.join(DTYPES)}, got {short_repr(index['dtype'])}")
    hidden = need("hidden_size")
    if not _whole(hidden, 1, MAX_HIDDEN):
        raise _damaged(path, "hidden_size", f"must be a whole number in [1, {MAX_HIDDEN}], got {short_repr(hidden)}")
    shards = need("shards")
    if not isinstance(shards, list):
        raise _damaged(path, "shards", f"must be a list of shard file names, got {type(shards).__name__}")
    for number, name in enumerate(shards):
        if not (isinstance(name, str) and SHARD_NAME.fullmatch(name)):
            raise _damaged(path, f"shards[{number}]",
                           f"must be a shard file name (shard-NNNNN.safetensors), got {short_repr(name)}")
    listed = set(shards)
    entries = need("entries")
    if not isinstance(entries, dict):
        raise _damaged(path, "entries", f"must be a mapping of utterance ids, got {type(entries).__name__}")
    for utt_id, entry in entries.items():
        where = f"entries[{short_repr(utt_id)}]"
        if not isinstance(entry, dict):
            raise _damaged(path, where, f"must be a mapping, got {type(entry).__name__}")
        shard = entry.get("shard")
        if not (isinstance(shard, str) and shard in listed):
            raise _damaged(path, f"{where}.shard", "must name one of the cache's shards (shard-NNNNN.safetensors, "
                                                   f"listed in 'shards'), got {short_repr(shard)}")
        for key in ("key", "ids"):
            if not isinstance(entry.get(key), str):
                raise _damaged(path, f"{where}.{key}", f"must be a string, got {short_repr(entry.get(key))}")
        shape = entry.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and _whole(shape[0], 1, MAX_ROWS) and shape[1] == hidden
                and _whole(shape[1], 1, MAX_HIDDEN)):
            raise _damaged(path, f"{where}.shape", f"must be [rows, hidden_size] with rows in [1, {MAX_ROWS}] and "
                                                   f"hidden_size {hidden}, got {short_repr(shape)}")


def _write_atomic_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f"{TEMP_PREFIX}{path.name}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


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
    index = _own_index(base)  # refuses (deleting nothing) a folder that is not a cache of ours
    if index is not None and index.get("format") == CACHE_FORMAT:
        _check_index(base / INDEX, index)
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
    index["language"] = language if language is not None else index.get("language")
    listed = set(index["shards"])
    for name in sorted(listed):  # reused shards are read by training: none may lead out of the cache
        _check_inside(base, base / name)
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
            raise FeatureCacheError(f"feature cache {base} has format {short_repr(index.get('format'))}, "
                                    f"expected {CACHE_FORMAT!r}; {RERUN_HINT}")
        _check_index(base / INDEX, index)
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
            _check_inside(self.folder, path)
            try:
                self._handles[shard] = safe_open(str(path), framework="pt")
            except Exception as error:  # noqa: BLE001  (safetensors raises its own error types)
                raise _damaged(path, "cannot be read", f"({type(error).__name__}: "
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
            raise _damaged(path, name, "are missing")
        try:
            vectors = handle.get_tensor(key)
        except Exception as error:  # noqa: BLE001
            raise _damaged(path, name, f"cannot be read ({type(error).__name__})") from None
        if vectors.dtype != DTYPES[self.dtype]:
            raise _damaged(path, name, f"have dtype {str(vectors.dtype).removeprefix('torch.')}; "
                                       f"the cache holds {self.dtype}")
        if list(vectors.shape) != entry["shape"]:
            raise _damaged(path, name, f"have shape {tuple(vectors.shape)}; the index records "
                                       f"{tuple(entry['shape'])} (hidden_size {self.hidden_size})")
        vectors = vectors.to(torch.float32)
        if not bool(torch.isfinite(vectors).all()):
            raise _damaged(path, name, "hold NaN or infinite values")
        return vectors
