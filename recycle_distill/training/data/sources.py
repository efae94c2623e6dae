"""One entry point per question: "give me the manifest of this source".

:func:`build_manifest` takes any supported source (LibriSpeech root + subsets, a folder
of audio, a TSV manifest, a ``len_for_bucket`` folder or CSV); :func:`load_manifest` reads
an existing manifest file; :func:`manifest_from_data_config` reads the reference YAML's
``data:`` section. All of them fail before training, naming the source, when a source is
missing or empty.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from recycle_distill.training.data.manifest import (
    Manifest,
    ManifestError,
    ManifestNotFoundError,
    read_len_for_bucket,
    read_tsv_manifest,
)
from recycle_distill.training.data.scan import AUDIO_EXTENSIONS, scan_folder, scan_librispeech

logger = logging.getLogger(__name__)

__all__ = ["build_manifest", "load_manifest", "manifest_from_data_config"]

PathLike = Union[str, os.PathLike]


def load_manifest(
    path: PathLike, *, root: Optional[PathLike] = None, subsets: Optional[Sequence[str]] = None
) -> Manifest:
    """Read a manifest file (no audio is opened).

    Args:
        path: a fairseq ``.tsv`` manifest; a ``len_for_bucket`` ``<subset>.csv``; or a folder
            of ``len_for_bucket`` CSVs (then ``subsets`` picks the CSVs).
        root: the LibriSpeech root the CSV paths are relative to (CSV sources only).
        subsets: subset names for a ``len_for_bucket`` folder.

    Raises:
        ManifestNotFoundError: the file (or a subset's CSV) does not exist.
        ManifestError: malformed or empty, or a CSV without ``root``.
    """
    source = Path(path)
    if source.is_dir():
        if not subsets:
            raise ManifestError(f"{source} is a folder: pass subsets=[...] to read its len_for_bucket CSVs")
        if root is None:
            raise ManifestError(f"len_for_bucket CSVs in {source} need root= (the LibriSpeech root)")
        return read_len_for_bucket(source, subsets, root)
    if not source.exists():
        raise ManifestNotFoundError(f"manifest file not found: {source}")
    if source.suffix.lower() == ".csv":
        if root is None:
            raise ManifestError(f"len_for_bucket CSV {source} needs root= (the LibriSpeech root)")
        return read_len_for_bucket(source.parent, [source.stem], root)
    return read_tsv_manifest(source)


def build_manifest(
    source: PathLike,
    subsets: Optional[Sequence[str]] = None,
    *,
    root: Optional[PathLike] = None,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
    progress: Optional[bool] = None,
    num_threads: Optional[int] = None,
    write_cache: bool = True,
) -> Manifest:
    """Manifest of any supported source.

    * a folder + ``subsets``: LibriSpeech root, scans ``<source>/<subset>/**/*.flac``;
    * a folder of ``<subset>.csv`` files + ``subsets`` + ``root``: ``len_for_bucket`` CSVs;
    * a folder alone: every audio file under it (``extensions``, recursive);
    * a ``.tsv`` file: fairseq manifest; a ``.csv`` file + ``root``: one ``len_for_bucket`` CSV.

    Folder scans read headers only and are cached (see :mod:`.scan`); ``write_cache=False``
    reads a cached scan but writes none (``--check`` writes nothing).

    Returns:
        a :class:`Manifest` (a list of :class:`AudioEntry`).

    Raises:
        ManifestNotFoundError / ManifestError: missing or empty sources, naming them.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise ManifestNotFoundError(f"data source not found: {path}")
    if path.is_file():
        return load_manifest(path, root=root, subsets=subsets)
    if subsets:
        if isinstance(subsets, str):
            subsets = [subsets]
        # A bucketing folder holds <subset>.csv files rather than <subset>/ folders.
        if root is not None and all((path / f"{subset}.csv").is_file() for subset in subsets):
            return read_len_for_bucket(path, subsets, root)
        return scan_librispeech(
            path, subsets, cache_dir=cache_dir, use_cache=use_cache, progress=progress, num_threads=num_threads,
            write_cache=write_cache,
        )
    return scan_folder(
        path, extensions=extensions, cache_dir=cache_dir, use_cache=use_cache, progress=progress,
        num_threads=num_threads, write_cache=write_cache,
    )


def manifest_from_data_config(
    data: Mapping[str, Any],
    split: str = "train",
    *,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
    progress: Optional[bool] = None,
    write_cache: bool = True,
) -> Manifest:
    """Manifest for the reference YAML ``data:`` section.

    Keys: ``libri_root``, ``train_set`` / ``test_set`` (subset lists) and optionally
    ``bucketing_path`` (folder of ``<subset>.csv`` len_for_bucket files, relative to the
    working directory as in the reference). The CSVs are used when all of the split's
    subsets have one (no audio is opened); otherwise ``libri_root`` is scanned (cached).
    Two extra keys, not in the reference, select other sources: ``manifest`` (a TSV/CSV
    file) and ``audio_dir`` (a folder of audio).

    Args:
        data: the ``data:`` mapping.
        split: "train" (``train_set``) or "test" (``test_set``).
    """
    if split not in ("train", "test"):
        raise ManifestError(f"split must be 'train' or 'test', got {split!r}")
    scan_options = dict(cache_dir=cache_dir, use_cache=use_cache, progress=progress, write_cache=write_cache)
    if data.get("manifest"):
        return load_manifest(data["manifest"], root=data.get("libri_root"))
    if data.get("audio_dir"):
        return build_manifest(data["audio_dir"], **scan_options)
    subsets = data.get(f"{split}_set")
    if isinstance(subsets, str):
        subsets = [subsets]
    if not subsets:
        raise ManifestError(f"data config has no '{split}_set' subsets (keys: {sorted(data)})")
    libri_root = data.get("libri_root")
    if not libri_root:
        raise ManifestError("data config has no 'libri_root'")
    bucketing = data.get("bucketing_path")
    if bucketing:
        missing = [s for s in subsets if not (Path(bucketing) / f"{s}.csv").is_file()]
        if not missing:
            return read_len_for_bucket(bucketing, subsets, libri_root)
        logger.warning(
            "bucketing_path %s has no CSV for %s; scanning %s instead", bucketing, missing, libri_root
        )
    return scan_librispeech(libri_root, subsets, **scan_options)
