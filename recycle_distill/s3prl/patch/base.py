"""The ground patch_hub stands on: its errors, the SUPERB tasks, the S3PRL tree, file helpers.

Sections (formerly one module each): errors, tasks, tree, files.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recycle_distill.util.atomic import atomic_write as _atomic_write
from recycle_distill.util.atomic import default_mode


# -------------------- errors ----------------------------------------------------------------
# The two ways a patch_hub.py run can fail, and the exit statuses it reports.


# 0: everything is in the wanted state; 1: some file was left alone (see the warnings);
# 2: the tree was refused and nothing was written; 3: a write failed part way (the manifest
# already records every change, so ``--revert`` restores the tree).
EXIT_OK, EXIT_WARNINGS, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2, 3


class PatchError(Exception):
    """A file is not in the state a patch expects; the message says why."""


class RefusedError(Exception):
    """The tree cannot be patched at all; the message says why."""


class WriteFailed(Exception):
    """Writing ``label`` (a target, relative to the tree) failed part way through a run."""

    def __init__(self, label: str, error: Exception) -> None:
        super().__init__(f"{label} ({getattr(error, 'strerror', None) or error})")
        self.label, self.error = label, error


def utf8_text(data: bytes) -> str:
    """``data`` decoded as UTF-8; PatchError naming the first bad byte and its offset otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PatchError(f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})") from None


# -------------------- tasks -----------------------------------------------------------------
# The SUPERB tasks: where S3PRL keeps each config and which fine-tuning tweaks it gets.


@dataclass(frozen=True)
class TaskTweak:
    """One SUPERB task: where S3PRL keeps its config and which tweaks it gets."""

    key: str  # SUPERB abbreviation
    title: str  # human-readable task name
    downstream: str  # S3PRL's `-d` name
    config: str  # path of the config under s3prl/downstream/
    shipped: str  # file name in downstream_configs/
    scheduler: bool = False  # uncomment the commented scheduler block
    old_lr: float | None = None  # optimizer lr expected before the patch ...
    new_lr: str | None = None  # ... and the YAML float token written instead

    @property
    def changes(self) -> list[str]:
        """Short descriptions of the tweaks this task gets (empty: none)."""
        out = []
        if self.scheduler:
            out.append("scheduler uncommented")
        if self.new_lr is not None:
            out.append(f"lr {format_lr(self.old_lr)} -> {self.new_lr}")
        return out


TASKS = (
    TaskTweak("PR", "Phoneme Recognition", "ctc", "ctc/libriphone.yaml", "ctc_libriphone.yaml", True),
    TaskTweak("KS", "Keyword Spotting", "speech_commands", "speech_commands/config.yaml",
         "speech_commands.yaml", True),
    TaskTweak("IC", "Intent Classification", "fluent_commands", "fluent_commands/config.yaml",
         "fluent_commands.yaml", True),
    TaskTweak("SID", "Speaker Identification", "voxceleb1", "voxceleb1/config.yaml", "voxceleb1.yaml",
         True, old_lr=1.0e-4, new_lr="1.0e-3"),
    TaskTweak("ER", "Emotion Recognition", "emotion", "emotion/config.yaml", "emotion.yaml", True),
    TaskTweak("ASR", "Automatic Speech Recognition", "asr", "asr/config.yaml", "asr.yaml", True),
    TaskTweak("SF", "Slot Filling", "ctc", "ctc/snips.yaml", "ctc_snips.yaml", True),
    # In git, sv_voxceleb1/config.yaml is a symlink to configs/amsoftmax.yaml: the target
    # is patched and the link is kept.
    TaskTweak("ASV", "Automatic Speaker Verification", "sv_voxceleb1", "sv_voxceleb1/config.yaml",
         "sv_voxceleb1.yaml", True),
    TaskTweak("QbE", "Query by Example", "quesst14_dtw", "quesst14_dtw/config.yaml",
         "quesst14_dtw.yaml"),
    TaskTweak("SD", "Speaker Diarization", "diarization", "diarization/config.yaml",
         "diarization.yaml"),
)


def format_lr(value: float) -> str:
    """Format a learning rate the way S3PRL's configs write it, e.g. ``1.0e-4``."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# -------------------- tree ------------------------------------------------------------------
# Recognising an S3PRL tree: a git checkout root or an installed ``s3prl`` package directory.


@dataclass
class Tree:
    """An S3PRL tree: ``root`` as given, ``package`` is the folder holding hub.py."""

    root: Path
    package: Path
    checkout: bool  # a git checkout root (else an installed package directory)

    @property
    def downstream(self) -> Path:
        """The folder holding the downstream tasks."""
        return self.package / "downstream"

    def label(self, path: Path) -> str:
        """``path`` relative to the root for messages and diffs."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def locate_tree(root: Path) -> Tree:
    """Recognise an S3PRL checkout root or an installed s3prl package directory.

    Raises RefusedError naming what is missing.
    """
    if not root.exists():
        raise RefusedError(f"{root} does not exist")
    if not root.is_dir():
        raise RefusedError(f"{root} is not a directory")
    root = root.resolve()
    for package, checkout in ((root / "s3prl", True), (root, False)):
        if (package / "hub.py").is_file() and (package / "downstream").is_dir():
            return Tree(root, package, checkout)

    def missing(prefix: str) -> str:
        """The required entries absent under root/prefix, e.g. 's3prl/hub.py'."""
        names = []
        if not (root / prefix / "hub.py").is_file():
            names.append(f"{prefix}hub.py")
        if not (root / prefix / "downstream").is_dir():
            names.append(f"{prefix}downstream/")
        return " and ".join(names)

    raise RefusedError(
        f"{root} is not an S3PRL tree: missing {missing('s3prl/')} (for a git checkout "
        f"root), and missing {missing('')} (for an installed s3prl package directory)")


# -------------------- files -----------------------------------------------------------------
# File helpers: atomic writes and folder copies, backups, and content hashes of folders.
#
# Every write goes through a temp file (or folder) in the same directory and os.replace, so an
# interrupted run leaves each file either as it was or as wanted, never half written.


BACKUP_SUFFIX = ".recycle-distill.orig"


def file_mode(path: Path) -> int:
    """The permission bits of ``path`` (what a replacement or backup should keep)."""
    return path.stat().st_mode & 0o7777


def read_if_file(path: Path) -> bytes | None:
    """The content of ``path``, or None when it is not a file."""
    return path.read_bytes() if path.is_file() else None


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` via a temp file ``.<name>.<random>.tmp`` in the same folder.

    The file mode is ``mode`` if given, else the mode of the file being replaced, else
    0o644 filtered by the umask.
    """
    if mode is None and not path.exists():
        mode = default_mode(0o644)
    _atomic_write(path, lambda temp: Path(temp).write_bytes(data), mode=mode, suffix=".tmp", fsync=True)


def backup_path(path: Path) -> Path:
    """Where the original of ``path`` is kept."""
    return path.with_name(path.name + BACKUP_SUFFIX)


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (ignoring __pycache__ and .pyc)."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if "__pycache__" in path.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        hashes[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def write_folder_atomically(dst: Path, files: dict[str, bytes]) -> None:
    """Create the folder ``dst`` holding ``files`` (name -> bytes) through a temp folder.

    Refuses (FileExistsError) if ``dst`` appeared meanwhile: a folder is only ever created.
    """
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            os.chmod(tmp / name, 0o644 & ~umask)
        os.chmod(tmp, 0o755 & ~umask)
        os.rename(tmp, dst)  # dst was absent when planned, and the tree lock keeps it so
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_folder(folder: Path) -> None:
    """Remove ``folder``: renamed first to a temp name beside it, so that a removal stopped part way
    leaves no half folder under the real name (the next run removes the temp, see runs.py)."""
    if re.fullmatch(r"\..+\.[A-Za-z0-9_]{8}\.tmp", folder.name):  # already a temp of ours
        shutil.rmtree(folder)
        return
    temp = folder.with_name(f".{folder.name}.{''.join(secrets.choice(_TEMP_CHARS) for _ in range(8))}.tmp")
    os.rename(folder, temp)
    shutil.rmtree(temp)


_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def copy_tree_atomically(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` (replacing an existing ``dst``) through a temp folder."""
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        shutil.copytree(src, tmp / dst.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if dst.exists():
            os.replace(dst, tmp / "old")
        os.replace(tmp / dst.name, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
