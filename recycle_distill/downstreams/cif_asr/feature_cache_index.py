"""Reading and checking a feature cache's index: its format, fields, shard names and paths.

The index (``index.json``) is the cache's marker and its table of contents; nothing in it is
trusted. :func:`own_index` tells a folder holding a cache of ours (any version of the format)
from one that is not ours, which a build must leave alone; :func:`check_index` checks every key
(types, ranges, shard names listed in ``shards``) before a build reuses a cache or a reader
opens it; :func:`check_inside` keeps a shard from leading out of the cache folder; and
:func:`damaged` is the one-line error naming the file and the key at fault, which the reader's
vector checks (:meth:`~recycle_distill.downstreams.cif_asr.feature_cache.FeatureCache.get`)
share. Writing and reading the vectors is :mod:`recycle_distill.downstreams.cif_asr.feature_cache`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional

import torch

from recycle_distill.util.atomic import listing
from recycle_distill.util.messages import plain, short_repr

__all__ = ["CACHE_FORMAT", "DTYPES", "INDEX", "SHARD_PATTERN", "TEMP_PREFIX", "FeatureCacheError", "check_index",
           "check_inside", "damaged", "own_index", "read_index"]

CACHE_FORMAT = "cif-asr-feature-cache/1"
FORMAT_FAMILY = "cif-asr-feature-cache/"  # every version of our index format starts so
INDEX = "index.json"
SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.safetensors$")
SHARD_NAME = re.compile(r"shard-(\d{5,9})\.safetensors")  # what an index may name (fullmatch)
TEMP_PREFIX = ".tmp-"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DAMAGED_HINT = "re-run `recycle-distill cif-prepare` with a new --cache folder"
MAX_HIDDEN = 1 << 16  # widest hidden size an index may declare
MAX_ROWS = 1_000_000  # most vectors (units + 1) one utterance may declare
LISTED = 5  # entries a refusal names before "and N more"


class FeatureCacheError(ValueError):
    """A cache is missing, built for another teacher, or lacks an utterance."""


def read_index(folder: Path) -> Optional[dict[str, Any]]:
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


def own_index(folder: Path) -> Optional[dict[str, Any]]:
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


def damaged(path: Path, key: str, problem: str) -> FeatureCacheError:
    """The one-line error for cache file ``path`` whose ``key`` has ``problem``, with the way out."""
    return FeatureCacheError(f"feature cache {plain(path)}: {key} {problem}; {DAMAGED_HINT}")


def check_inside(folder: Path, path: Path) -> None:
    """Refuse a shard that is a symlink leading out of the cache folder."""
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(folder):
        raise damaged(path, "leads outside the cache folder", f"(it resolves to {plain(real)})")


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_index(path: Path, index: dict[str, Any]) -> None:
    """Raise FeatureCacheError naming ``path`` and the first key of ``index`` that is missing,
    of the wrong type, out of range, or names a shard outside the cache."""

    def need(key: str) -> Any:
        if key not in index:
            raise damaged(path, key, "is missing")
        return index[key]

    if not isinstance(need("fingerprint"), str):
        raise damaged(path, "fingerprint", f"must be a string, got {short_repr(index['fingerprint'])}")
    language = index.get("language")
    if language is not None and not isinstance(language, str):
        raise damaged(path, "language", f"must be a string or null, got {short_repr(language)}")
    if need("dtype") not in DTYPES or not isinstance(index["dtype"], str):
        raise damaged(path, "dtype", f"must be one of {', '.join(DTYPES)}, got {short_repr(index['dtype'])}")
    hidden = need("hidden_size")
    if not _whole(hidden, 1, MAX_HIDDEN):
        raise damaged(path, "hidden_size", f"must be a whole number in [1, {MAX_HIDDEN}], got {short_repr(hidden)}")
    shards = need("shards")
    if not isinstance(shards, list):
        raise damaged(path, "shards", f"must be a list of shard file names, got {type(shards).__name__}")
    for number, name in enumerate(shards):
        if not (isinstance(name, str) and SHARD_NAME.fullmatch(name)):
            raise damaged(path, f"shards[{number}]",
                           f"must be a shard file name (shard-NNNNN.safetensors), got {short_repr(name)}")
    listed = set(shards)
    entries = need("entries")
    if not isinstance(entries, dict):
        raise damaged(path, "entries", f"must be a mapping of utterance ids, got {type(entries).__name__}")
    for utt_id, entry in entries.items():
        where = f"entries[{short_repr(utt_id)}]"
        if not isinstance(entry, dict):
            raise damaged(path, where, f"must be a mapping, got {type(entry).__name__}")
        shard = entry.get("shard")
        if not (isinstance(shard, str) and shard in listed):
            raise damaged(path, f"{where}.shard", "must name one of the cache's shards (shard-NNNNN.safetensors, "
                                                   f"listed in 'shards'), got {short_repr(shard)}")
        for key in ("key", "ids"):
            if not isinstance(entry.get(key), str):
                raise damaged(path, f"{where}.{key}", f"must be a string, got {short_repr(entry.get(key))}")
        shape = entry.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and _whole(shape[0], 1, MAX_ROWS) and shape[1] == hidden
                and _whole(shape[1], 1, MAX_HIDDEN)):
            raise damaged(path, f"{where}.shape", f"must be [rows, hidden_size] with rows in [1, {MAX_ROWS}] and "
                                                   f"hidden_size {hidden}, got {short_repr(shape)}")

