"""A plan: everything a run will write, copy and remove, what it will report, and its diff.

Sections (formerly one module each): plan, diff.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from recycle_distill.util.atomic import OutputError
from recycle_distill.util.messages import plain
from recycle_distill.s3prl.patch.base import (
    Tree,
    WriteFailed,
    atomic_write,
    backup_path,
    copy_tree_atomically,
    file_mode,
    read_if_file,
    remove_folder,
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
    # The manifest: its write or removal (in ``writes`` / ``removals``) is carried out last, and a
    # patch writes ``journal`` (the manifest recording every change it is about to make) first.
    manifest: Path | None = None
    journal: Write | None = None

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
    """Carry out a plan: the journal, copies, new folders, writes (backups first, in plan order),
    removals, then the manifest.

    A patch's journal records every change before the first one is made, so a run stopped part
    way (a full disk, an immutable file) leaves a tree that ``--revert`` restores; a revert
    rewrites the manifest only once its own changes are made.  Raises WriteFailed naming the
    target whose write failed.
    """
    if plan.journal is not None:
        _step(plan, plan.journal.path, _write, plan.journal)
    for src, dst in plan.copies:
        _step(plan, dst, copy_tree_atomically, src, dst)
    for folder, files in plan.folders:
        _step(plan, folder, write_folder_atomically, folder, files)
    last = [write for write in plan.writes if write.path == plan.manifest]
    for write in plan.writes:
        if write.path != plan.manifest:
            _step(plan, write.path, _write, write)
    for path in plan.removals:
        if path != plan.manifest:
            _step(plan, path, path.unlink, missing_ok=True)
    for folder in plan.tree_removals:
        _step(plan, folder, remove_folder, folder)
    for write in last:
        if plan.journal is None or write.new != plan.journal.new:
            _step(plan, write.path, _write, write)
    if plan.manifest is not None and plan.manifest in plan.removals:
        _step(plan, plan.manifest, plan.manifest.unlink, missing_ok=True)


def _write(write: Write) -> None:
    atomic_write(write.path, write.new, file_mode(write.mode_from) if write.mode_from else None)


def _step(plan: Plan, target: Path, action, *args, **kwargs) -> None:
    """Run one write of the plan; an OSError becomes WriteFailed naming ``target``."""
    try:
        action(*args, **kwargs)
    except (OSError, OutputError) as err:
        raise WriteFailed(plain(plan.tree.label(target)), err) from err


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
