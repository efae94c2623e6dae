"""Build manifests by scanning audio headers, with an on-disk cache.

Only headers are read (``soundfile.info``), never samples. A scan is cached as an extended
TSV manifest in a cache folder; the file name holds a hash of the source (kind, path,
subsets) and a fingerprint of the file list (relative path, size, mtime), so a second build
of an unchanged source lists and stats the files but opens none of them, and any added,
removed or rewritten file gives a new fingerprint and a fresh scan.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence, Union

import soundfile
from tqdm.auto import tqdm

from recycle_distill.util.atomic import OutputError, atomic_write, default_mode
from recycle_distill.util.sample_rate import SAMPLE_RATE
from recycle_distill.training.data.manifest import (
    AudioEntry,
    Manifest,
    ManifestError,
    ManifestNotFoundError,
    read_tsv_manifest,
    write_tsv_manifest,
)

logger = logging.getLogger(__name__)

__all__ = ["AUDIO_EXTENSIONS", "default_cache_dir", "scan_librispeech", "scan_folder"]

PathLike = Union[str, os.PathLike]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
EXPECTED_SAMPLE_RATE = SAMPLE_RATE
CACHE_ENV = "RECYCLE_DISTILL_CACHE"
# Below this many files a progress bar is noise.
PROGRESS_MIN_FILES = 1000
# Warn about the first few unreadable files one by one, then only count them.
MAX_LISTED_PROBLEMS = 10
_CACHE_VERSION = "v1"

Header = tuple[int, int, int]  # frames, sample rate, channels


def default_cache_dir() -> Path:
    """``$RECYCLE_DISTILL_CACHE`` or ``~/.cache/recycle_distill/manifests``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "recycle_distill" / "manifests"


def _read_header(path: str) -> Header:
    """(frames, sample rate, channels) of one file; tests patch this to count reads."""
    info = soundfile.info(path)
    return int(info.frames), int(info.samplerate), int(info.channels)


def _safe_header(path: str) -> Union[Header, str]:
    try:
        return _read_header(path)
    except Exception as error:  # libsndfile raises several types; any of them means "unreadable"
        return f"{type(error).__name__}: {error}"


def _list_files(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """Audio files under ``folder`` (recursive, following links), sorted for stable order."""
    suffixes = tuple(ext.lower() for ext in extensions)
    found = []
    visited = set()
    for directory, subdirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:  # a symlink loop (or a second link to a folder already listed)
            subdirs[:] = []
            continue
        visited.add(real)
        subdirs.sort()
        found.extend(Path(directory, name) for name in names if name.lower().endswith(suffixes))
    found.sort()
    return found


def _fingerprint(paths: Sequence[Path], base: Path) -> str:
    """Hash of relative path, size and mtime of every file: changes when any file does."""
    digest = hashlib.sha1()
    for path in paths:
        try:
            stat = path.stat()
            state = f"{stat.st_size}\0{stat.st_mtime_ns}"
        except OSError:  # a dangling symlink: listed, skipped as unreadable by the scan
            state = "unreadable"
        name = str(path.relative_to(base)).encode("utf-8", "surrogateescape")
        digest.update(name + f"\0{state}\n".encode())
    return digest.hexdigest()[:16]


def _cache_prefix(cache_dir: Path, kind: str, source: Path, subsets: Sequence[str]) -> str:
    readable = re.sub(r"[^A-Za-z0-9]+", "_", str(source)).strip("_")[-60:]
    key = hashlib.sha1(f"{_CACHE_VERSION}\0{kind}\0{source}\0{','.join(subsets)}".encode()).hexdigest()[:8]
    return str(cache_dir / f"{kind}-{readable}-{key}")


def _load_cache(path: Path, source: str, kind: str) -> Optional[Manifest]:
    if not path.is_file():
        return None
    try:
        cached = read_tsv_manifest(path)
    except (ManifestError, OSError, ValueError) as error:
        logger.warning("ignoring unreadable manifest cache %s (%s); rescanning %s", path, error, source)
        return None
    logger.info("manifest for %s read from cache %s (%d files)", source, path, len(cached))
    return Manifest(cached, source=source, kind=kind, cache_path=path, from_cache=True)


def _store_cache(manifest: Manifest, path: Path, prefix: str, root: Path) -> None:
    """Write atomically (ranks may build at once; the file follows the umask), then drop stale caches of the source."""
    try:
        atomic_write(path, lambda temporary: write_tsv_manifest(manifest, temporary, root=root, extended=True),
                     mode=default_mode(), prefix=".tmp-", suffix=".tsv")
        for stale in path.parent.glob(Path(prefix).name + "-*.tsv"):
            if stale != path:
                stale.unlink(missing_ok=True)
        manifest.cache_path = path
    except (OSError, UnicodeError, OutputError) as error:
        # A read-only cache folder (or a file name that is not UTF-8) must not stop training;
        # it only costs a rescan next time.
        logger.warning("could not write manifest cache %s: %s", path, error)


def _scan_headers(paths: Sequence[Path], source: str, progress: Optional[bool], num_threads: int) -> list:
    """Headers (or error strings) for ``paths``, in order, with a progress bar for long scans."""
    show = progress if progress is not None else len(paths) >= PROGRESS_MIN_FILES
    names = [str(path) for path in paths]
    with tqdm(total=len(names), desc=f"scanning {source}", unit="file", disable=not show) as bar:
        if num_threads <= 1 or len(names) < 64:
            results = []
            for name in names:
                results.append(_safe_header(name))
                bar.update()
            return results
        # libsndfile calls release the GIL, so threads overlap the per-file open/seek latency.
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            results = []
            for result in pool.map(_safe_header, names, chunksize=64):
                results.append(result)
                bar.update()
            return results


def _entries_from_headers(
    paths: Sequence[Path],
    headers: Sequence[Union[Header, str]],
    source: str,
    speakers: Optional[Sequence[Optional[str]]] = None,
    transcripts: Optional[dict[str, str]] = None,
) -> tuple[list[AudioEntry], list[str]]:
    """Entries for readable files; unreadable ones are warned about and returned apart."""
    entries, unreadable, off_format = [], [], []
    for position, (path, header) in enumerate(zip(paths, headers)):
        if isinstance(header, str) or _breaks_tsv(str(path)):
            if not isinstance(header, str):
                header = ("its name holds a tab or a line break, which a TSV manifest line cannot hold; "
                          "rename the file")
            unreadable.append(str(path))
            if len(unreadable) <= MAX_LISTED_PROBLEMS:
                shown = repr(str(path)) if _breaks_tsv(str(path)) else str(path)
                logger.warning("skipping unreadable audio file %s (%s)", shown, header)
            continue
        frames, rate, channels = header
        if rate != EXPECTED_SAMPLE_RATE or channels != 1:
            off_format.append(f"{path} ({rate} Hz, {channels} ch)")
        speaker = speakers[position] if speakers is not None else None
        transcript = transcripts.get(path.stem) if transcripts is not None else None
        entries.append(AudioEntry(str(path), frames, rate, channels, speaker, transcript))
    if len(unreadable) > MAX_LISTED_PROBLEMS:
        logger.warning("%d unreadable audio files in %s were left out in all", len(unreadable), source)
    if off_format:
        # Reported before training: the dataset will skip these (training never resamples).
        logger.warning(
            "%d of %d files in %s are not %d Hz mono and will be skipped by the dataset "
            "(convert them offline); first: %s",
            len(off_format), len(entries), source, EXPECTED_SAMPLE_RATE, off_format[0],
        )
    return entries, unreadable


def _breaks_tsv(path: str) -> bool:
    """True if ``path`` cannot be one field of a one-line-per-file TSV manifest."""
    return any(char in path for char in "\t\n\r")


def _read_transcripts(files: Sequence[Path]) -> dict[str, str]:
    """utterance id -> text from LibriSpeech ``<spk>-<chap>.trans.txt`` files."""
    transcripts = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                utterance, _, text = line.strip().partition(" ")
                if utterance:
                    transcripts[utterance] = text
    return transcripts


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def scan_librispeech(
    root: PathLike,
    subsets: Sequence[str],
    *,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
    progress: Optional[bool] = None,
    num_threads: Optional[int] = None,
    write_cache: bool = True,
) -> Manifest:
    """Manifest of ``<root>/<subset>/**/*.flac`` for each subset, with speakers and transcripts.

    Args:
        root: the LibriSpeech root (``libri_root``).
        subsets: subset folder names, e.g. ``["train-clean-100"]``.
        cache_dir: where scans are cached (default :func:`default_cache_dir`).
        use_cache: read and write the cache.
        write_cache: False reads a cached scan but writes none (``--check``).
        progress: force the tqdm bar on/off (default: on for >= 1000 files).
        num_threads: header-reading threads (default: min(8, cpus)).

    Raises:
        ManifestNotFoundError: the root or a subset folder is missing (names the subset and
            the path searched).
        ManifestError: a subset folder without .flac files.
    """
    if isinstance(subsets, str):
        subsets = [subsets]
    if not subsets:
        raise ManifestError(f"no LibriSpeech subsets given for {root}")
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise ManifestNotFoundError(f"LibriSpeech root not found: {base}")
    audio: list[Path] = []
    speakers: list[Optional[str]] = []
    transcript_files: list[Path] = []
    for subset in subsets:
        folder = base / subset
        if not folder.is_dir():
            available = sorted(p.name for p in base.iterdir() if p.is_dir())
            raise ManifestNotFoundError(
                f"LibriSpeech subset {subset!r} not found: searched {folder} (folders in {base}: {available})"
            )
        files = _list_files(folder, (".flac",))
        if not files:
            raise ManifestError(f"LibriSpeech subset {subset!r} has no .flac files under {folder}")
        audio.extend(files)
        # Layout <subset>/<speaker>/<chapter>/<utt>.flac: the speaker is the first folder.
        for path in files:
            parts = path.relative_to(folder).parts
            speakers.append(parts[0] if len(parts) > 1 else None)
        transcript_files.extend(_list_files(folder, (".trans.txt",)))
    source = f"{base} [{', '.join(subsets)}]"
    return _cached_scan(
        "librispeech", base, list(subsets), audio, source, cache_dir, use_cache, progress, num_threads,
        speakers=speakers, transcript_files=transcript_files, write_cache=write_cache,
    )


def scan_folder(
    folder: PathLike,
    *,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
    progress: Optional[bool] = None,
    num_threads: Optional[int] = None,
    write_cache: bool = True,
) -> Manifest:
    """Manifest of every audio file (``extensions``) under ``folder``, recursively.

    ``write_cache=False`` reads a cached scan but writes none (``--check``).

    Raises:
        ManifestNotFoundError: the folder does not exist.
        ManifestError: no audio files in it.
    """
    base = Path(folder).expanduser().resolve()
    if not base.is_dir():
        raise ManifestNotFoundError(f"audio folder not found: {base}")
    files = _list_files(base, extensions)
    if not files:
        raise ManifestError(f"no audio files ({', '.join(extensions)}) found under {base}")
    return _cached_scan("folder", base, [], files, str(base), cache_dir, use_cache, progress, num_threads,
                        write_cache=write_cache)


def _cached_scan(
    kind: str,
    base: Path,
    subsets: list[str],
    audio: list[Path],
    source: str,
    cache_dir: Optional[PathLike],
    use_cache: bool,
    progress: Optional[bool],
    num_threads: Optional[int],
    speakers: Optional[list[Optional[str]]] = None,
    transcript_files: Sequence[Path] = (),
    write_cache: bool = True,
) -> Manifest:
    cache_path = prefix = None
    if use_cache:
        cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        prefix = _cache_prefix(cache_root.expanduser().resolve(), kind, base, subsets)
        fingerprint = _fingerprint(list(audio) + list(transcript_files), base)
        cache_path = Path(f"{prefix}-{fingerprint}.tsv")
        cached = _load_cache(cache_path, source, kind)
        if cached is not None:
            return cached
    transcripts = _read_transcripts(transcript_files) if transcript_files else None
    headers = _scan_headers(audio, source, progress, num_threads or _default_threads())
    entries, unreadable = _entries_from_headers(audio, headers, source, speakers, transcripts)
    if not entries:
        raise ManifestError(f"none of the {len(audio)} audio files under {source} could be read")
    manifest = Manifest(entries, source=source, kind=kind, unreadable=unreadable)
    logger.info("scanned %d audio files in %s", len(entries), source)
    if cache_path is not None and prefix is not None and write_cache:
        _store_cache(manifest, cache_path, prefix, base)
    return manifest
