"""Manifest entries and the two on-disk list formats the trainer reads.

A manifest is a list of :class:`AudioEntry` (absolute path + length in samples, and what
else is known about the utterance). Two text formats are read and written here:

* fairseq TSV: the first line is the root folder, then ``relative_path<TAB>num_samples``
  lines (absolute paths are accepted too). The manifest cache uses the same layout with
  four optional extra columns (sample rate, channels, speaker, transcript).
* S3PRL ``len_for_bucket`` CSV: one ``<subset>.csv`` per subset with the columns
  ``,file_path,length,label`` and ``file_path`` relative to the LibriSpeech root.

No audio is decoded here; scanning folders lives in :mod:`.scan`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from recycle_distill.util.messages import short_repr

logger = logging.getLogger(__name__)

__all__ = [
    "AudioEntry",
    "Manifest",
    "ManifestError",
    "ManifestNotFoundError",
    "read_tsv_manifest",
    "write_tsv_manifest",
    "read_len_for_bucket",
    "write_len_for_bucket",
    "librispeech_speaker",
]

PathLike = Union[str, os.PathLike]

# LibriSpeech utterance ids are <speaker>-<chapter>-<utterance>.
_LIBRI_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class ManifestError(ValueError):
    """A data source that cannot give a training manifest; the message names the source."""


class ManifestNotFoundError(ManifestError, FileNotFoundError):
    """A data source (folder, subset, manifest file) that does not exist."""


@dataclass(frozen=True, slots=True)
class AudioEntry:
    """One utterance of a manifest.

    Attributes:
        path: absolute path of the audio file.
        num_samples: length in samples at the file's own rate (as recorded by the source).
        sample_rate: the file's rate when the source scanned headers, else None.
        channels: the file's channel count when the source scanned headers, else None.
        speaker: speaker id when the source knows it (LibriSpeech layout), else None.
        transcript: transcript when the source knows it, else None.
    """

    path: str
    num_samples: int
    sample_rate: Optional[int] = None
    channels: Optional[int] = None
    speaker: Optional[str] = None
    transcript: Optional[str] = None

    @property
    def utterance_id(self) -> str:
        """File name without its extension (the LibriSpeech utterance id)."""
        return Path(self.path).stem


class Manifest(list):
    """A ``list[AudioEntry]`` that also remembers where it came from.

    Attributes:
        source: the folder or file it was built from (for messages).
        kind: "librispeech", "folder", "tsv" or "len_for_bucket".
        cache_path: the cache file read or written, if any.
        from_cache: True when the entries were read from the cache (no header scan).
        unreadable: files the header scan could not open (left out of the entries).
    """

    def __init__(
        self,
        entries: Iterable[AudioEntry] = (),
        *,
        source: str = "",
        kind: str = "",
        cache_path: Optional[Path] = None,
        from_cache: bool = False,
        unreadable: Sequence[str] = (),
    ) -> None:
        super().__init__(entries)
        self.source = source
        self.kind = kind
        self.cache_path = cache_path
        self.from_cache = from_cache
        self.unreadable = list(unreadable)

    @property
    def total_samples(self) -> int:
        return sum(entry.num_samples for entry in self)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} entries, kind={self.kind!r}, source={self.source!r}, from_cache={self.from_cache})"


def librispeech_speaker(path: PathLike) -> Optional[str]:
    """Speaker id from a LibriSpeech file name ``<spk>-<chap>-<utt>.flac``, else None."""
    match = _LIBRI_ID.match(Path(path).stem)
    return match.group(1) if match else None


def _clean_field(text: Optional[str]) -> str:
    # Tabs and newlines would break the one-line-per-entry TSV layout.
    if text is None:
        return ""
    return " ".join(text.split())


# The most samples one manifest line may claim: 2**40 is 795 days at 16 kHz, and keeps sums and
# the batch planner's int64 arithmetic far from overflowing.
MAX_SAMPLES = 2**40
MAX_RATE_OR_CHANNELS = 2**31 - 1


def _count(text: str, key: str, where: str, low: int, high: int) -> int:
    """A whole number in [low, high] from a manifest field; one line naming the file, line and key otherwise."""
    value: Optional[int] = None
    try:
        value = int(text)
    except ValueError:
        try:  # the reference len_for_bucket CSVs may hold "16000.0"
            number = float(text)
            value = int(number) if math.isfinite(number) else None
        except ValueError:
            value = None
    if value is None or not low <= value <= high:
        raise ManifestError(f"{where}: {key} must be a whole number from {low} to {high}, got {short_repr(text)}")
    return value


def _optional_int(field: str, key: str, where: str) -> Optional[int]:
    return _count(field.strip(), key, where, 1, MAX_RATE_OR_CHANNELS) if field.strip() else None


def read_tsv_manifest(path: PathLike) -> Manifest:
    """Read a fairseq-style TSV manifest (optionally with the cache's extra columns).

    Layout: line 1 is the root folder; each further line is ``path<TAB>num_samples`` and
    optionally ``<TAB>sample_rate<TAB>channels<TAB>speaker<TAB>transcript``. Relative paths
    are joined to the root; absolute paths are kept. A relative root (or an empty first
    line) is taken relative to the TSV's own folder, so a manifest can travel with its
    audio. Lines starting with ``#`` after the root line are comments.

    Raises:
        ManifestNotFoundError: the file does not exist.
        ManifestError: a malformed line, or no entries.
    """
    tsv = Path(path)
    if not tsv.is_file():
        raise ManifestNotFoundError(f"TSV manifest not found: {tsv}")
    with open(tsv, encoding="utf-8", newline="") as handle:
        # Only "\n" (and a "\r" before it) ends a line: str.splitlines would also split on
        # form feeds and other separators that a file name may legally hold.
        lines = [line[:-1] if line.endswith("\r") else line for line in handle.read().split("\n")]
        if lines and lines[-1] == "":
            lines.pop()
    if not lines:
        raise ManifestError(f"TSV manifest {tsv} is empty (expected a root folder on line 1)")
    root = Path(lines[0].strip()) if lines[0].strip() else Path(".")
    if not root.is_absolute():
        root = tsv.parent / root
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ManifestError(f"{tsv}:{number}: expected 'path<TAB>num_samples', got {line!r}")
        where = f"{tsv}:{number}"
        num_samples = _count(fields[1], "num_samples", where, 0, MAX_SAMPLES)
        sample_rate = _optional_int(fields[2], "sample_rate", where) if len(fields) > 2 else None
        channels = _optional_int(fields[3], "channels", where) if len(fields) > 3 else None
        file_path = fields[0]
        full = file_path if os.path.isabs(file_path) else os.path.normpath(os.path.join(root, file_path))
        speaker = fields[4] if len(fields) > 4 and fields[4] else librispeech_speaker(file_path)
        transcript = fields[5] if len(fields) > 5 and fields[5] else None
        entries.append(AudioEntry(full, num_samples, sample_rate, channels, speaker, transcript))
    if not entries:
        raise ManifestError(f"TSV manifest {tsv} lists no audio files (root {root})")
    return Manifest(entries, source=str(tsv), kind="tsv")


def write_tsv_manifest(
    entries: Sequence[AudioEntry], path: PathLike, root: Optional[PathLike] = None, *, extended: bool = False
) -> Path:
    """Write entries as a TSV manifest; paths under ``root`` are written relative to it.

    Args:
        entries: the utterances.
        path: the TSV to write (parent folders are created).
        root: the root folder on line 1; defaults to the common folder of all entries.
        extended: also write sample rate, channels, speaker and transcript columns (the
            cache layout; plain fairseq readers only accept two columns).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if root is None:
        root = os.path.commonpath([os.path.dirname(e.path) for e in entries]) if entries else "."
    root = os.path.abspath(root)
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(root + "\n")
        for entry in entries:
            relative = os.path.relpath(entry.path, root)
            # Paths outside the root stay absolute instead of growing "../" chains.
            file_path = entry.path if relative.startswith("..") else relative
            fields = [file_path, str(entry.num_samples)]
            if extended:
                fields += [
                    "" if entry.sample_rate is None else str(entry.sample_rate),
                    "" if entry.channels is None else str(entry.channels),
                    _clean_field(entry.speaker),
                    _clean_field(entry.transcript),
                ]
            handle.write("\t".join(fields) + "\n")
    return out


def read_len_for_bucket(bucketing_path: PathLike, subsets: Sequence[str], libri_root: PathLike) -> Manifest:
    """Read S3PRL ``len_for_bucket`` CSVs (``<bucketing_path>/<subset>.csv``) for some subsets.

    The lengths come from the CSV (no audio is opened). ``file_path`` is relative to
    ``libri_root`` (absolute paths are kept); a non-empty ``label`` becomes the transcript.

    Raises:
        ManifestNotFoundError: a subset's CSV is missing (the message names it and the path).
        ManifestError: a CSV without ``file_path``/``length`` columns, or no entries at all.
    """
    if isinstance(subsets, str):
        subsets = [subsets]
    folder = Path(bucketing_path)
    entries: list[AudioEntry] = []
    for subset in subsets:
        csv_path = folder / f"{subset}.csv"
        if not csv_path.is_file():
            raise ManifestNotFoundError(
                f"len_for_bucket CSV for subset {subset!r} not found: {csv_path} (bucketing_path={folder})"
            )
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file_path", "length"} <= set(reader.fieldnames):
                raise ManifestError(f"{csv_path}: expected columns ',file_path,length,label', got {reader.fieldnames}")
            for row in reader:
                file_path = row["file_path"]
                if not file_path:
                    raise ManifestError(f"{csv_path}:{reader.line_num}: file_path is empty")
                full = file_path if os.path.isabs(file_path) else os.path.normpath(os.path.join(libri_root, file_path))
                label = (row.get("label") or "").strip() or None
                where = f"{csv_path}:{reader.line_num}"
                length = _count((row["length"] or "").strip(), "length", where, 0, MAX_SAMPLES)
                entries.append(AudioEntry(full, length, speaker=librispeech_speaker(file_path), transcript=label))
    if not entries:
        raise ManifestError(f"len_for_bucket CSVs in {folder} for subsets {list(subsets)} list no audio files")
    return Manifest(entries, source=str(folder), kind="len_for_bucket")


def write_len_for_bucket(entries: Sequence[AudioEntry], path: PathLike, libri_root: PathLike) -> Path:
    """Write one S3PRL ``len_for_bucket`` CSV (``,file_path,length,label``), longest first.

    S3PRL's generator sorts by length, descending, and leaves ``label`` empty; so does this.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(entries, key=lambda entry: -entry.num_samples)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "file_path", "length", "label"])
        for row, entry in enumerate(ordered):
            writer.writerow([row, os.path.relpath(entry.path, libri_root), entry.num_samples, ""])
    return out
