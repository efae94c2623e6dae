"""A plan: everything a run will write, copy and remove, what it will report, and its diff.

Sections (formerly one module each): plan, diff.
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from recycle_distill.s3prl.patch.base import (
    Tree,
    atomic_write,
    backup_path,
    copy_tree_atomically,
    file_mode,
    read_if_file,
    write_folder_atomically,
)


# -------------------- plan ------------------------------------------------------------------
# A plan: everything a run will write, copy and remove, and what it will report.
#
# Runs are planned in full before anything is touched, so ``--dry-run`` shows exactly what a
# real run would do, and a refused tree is refused before the first write.


class Write(NamedTuple):
    """One planned file write."""

    path: Path
    old: bytes | None  # current content (None: the file does not exist yet)
    new: bytes
    label: str  # shown in the dry-run diff; empty for our own bookkeeping files
    mode_from: Path | None = None  # give the file this file's mode (backups)


@dataclass
class Plan:
    """What a run will do: file writes, folder copies/removals, and what to report."""

    tree: Tree
    writes: list[Write] = field(default_factory=list)
    removals: list[Path] = field(default_factory=list)
    copies: list[tuple[Path, Path]] = field(default_factory=list)
    folders: list[tuple[Path, dict[str, bytes]]] = field(default_factory=list)  # new folders: name -> bytes
    tree_removals: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changed: int = 0

    def _label(self, path: Path | str) -> str:
        """How a message names ``path``: relative to the root; strings are kept as given."""
        return self.tree.label(path) if isinstance(path, Path) else path

    def note(self, status: str, path: Path | str, detail: str = "") -> None:
        """Record one report line."""
        self.lines.append(f"  {status:<11} {self._label(path)}{f'  ({detail})' if detail else ''}")

    def warn(self, path: Path | str, message: str) -> None:
        """Record a warning about a file that is left alone."""
        self.warnings.append(f"WARNING: {self._label(path)}: {message}")

    def write(self, path: Path, old: bytes | None, new: bytes, show_diff: bool = True,
              mode_from: Path | None = None) -> None:
        """Plan writing ``new`` to ``path`` (whose content is ``old``)."""
        label = self.tree.label(path) if show_diff else ""
        self.writes.append(Write(path, old, new, label, mode_from))


def plan_backup(plan: Plan, path: Path, original: bytes) -> None:
    """Plan keeping ``original`` as the backup of ``path`` (unless it already is)."""
    backup = backup_path(path)
    old = read_if_file(backup)
    if old != original:
        plan.write(backup, old, original, show_diff=False, mode_from=path)


def apply(plan: Plan) -> None:
    """Carry out a plan: copies, new folders, writes (backups first, in plan order), then removals."""
    for src, dst in plan.copies:
        copy_tree_atomically(src, dst)
    for folder, files in plan.folders:
        write_folder_atomically(folder, files)
    for write in plan.writes:
        mode = file_mode(write.mode_from) if write.mode_from else None
        atomic_write(write.path, write.new, mode)
    for path in plan.removals:
        path.unlink(missing_ok=True)
    for folder in plan.tree_removals:
        shutil.rmtree(folder)


# -------------------- diff ------------------------------------------------------------------
# Unified diffs of a plan, for ``--dry-run``.


def unified_diff(old: str, new: str, label: str) -> str:
    """A git-style unified diff of ``old`` -> ``new`` for the file ``label``."""

    def split(text: str) -> list[str]:
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n\\ No newline at end of file\n"
        return lines

    return "".join(difflib.unified_diff(split(old), split(new), f"a/{label}", f"b/{label}"))


def show_diff(plan: Plan) -> str:
    """The unified diff of every user-visible file the plan writes."""
    created = "".join(unified_diff("", data.decode("utf-8"), plan.tree.label(folder / name))
                      for folder, files in plan.folders for name, data in files.items())
    return created + "".join(unified_diff((write.old or b"").decode("utf-8"), write.new.decode("utf-8"),
                                          write.label)
                             for write in plan.writes if write.label)
