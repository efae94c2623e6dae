"""Marked blocks patch_hub appends to S3PRL's own modules, and the text functions every marked
block (these and the hub.py registration) is added, found and removed with.

Two blocks, one row each of :data:`INSERTS`:

* the checkpoint allow-list, appended to ``downstream/runner.py``: S3PRL's ``run_downstream.py``
  imports the runner before its first ``torch.load``, and torch >= 2.6 loads weights-only by
  default, which refuses the plain-data classes S3PRL's own ``states-*.ckpt`` pickle
  (:data:`CHECKPOINT_CLASSES`). The block allow-lists exactly those with
  ``torch.serialization.add_safe_globals``, so ``-m evaluate -e`` and resuming with ``-e`` work
  without switching the safe loader off; the launcher allow-lists the same table;
* the tri-stage learning-rate schedule, appended to ``schedulers.py``: S3PRL's ``get_scheduler``
  evaluates ``get_<name>`` in that module's namespace, so the block imports
  ``get_tri_stage_schedule`` there and ``scheduler: {name: tri_stage_schedule, ...}`` works. The
  import is guarded: where recycle_distill is not importable (``--copy`` setups) only that
  scheduler name is missing, S3PRL's others still load.

Each block sits between marker comments, like the hub.py registration; the file is backed up
once as ``<file>.recycle-distill.orig``, named in the manifest, and ``--revert`` restores the
backup byte for byte (or, if the file was edited since, cuts out only the block). A tree without
the file (the test fixture) gets a note and no block.

Standard library only (no torch): the block is text that S3PRL's Python runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from recycle_distill.s3prl.patch.base import PatchError, Tree, backup_path, read_if_file, utf8_text
from recycle_distill.s3prl.patch.plan import Plan, plan_backup

# The plain-data classes S3PRL's ``states-*.ckpt`` pickle, as (module, name): ``Args`` is the
# run's ``argparse.Namespace`` (strings, numbers, booleans; unpickling it runs no code).
CHECKPOINT_CLASSES = (("argparse", "Namespace"),)


# ---------------------------------------------------------------- marked blocks as text


def newline_of(text: str) -> str:
    """The line ending ``text`` uses (CRLF if it has any, else LF), for lines we add to it."""
    return "\r\n" if "\r\n" in text else "\n"


def find_block(text: str, begin: str, end: str) -> tuple[int, int] | None:
    """Character span of the block between the marker lines ``begin`` and ``end`` (included), or
    None if absent.  Raises PatchError when the markers are unbalanced or repeated."""
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise PatchError("its recycle-distill marker comments are unbalanced or repeated")
    start = sum(len(line) for line in lines[:begins[0]])
    stop = sum(len(line) for line in lines[:ends[0] + 1])
    return start, stop


def add_block(text: str, block: str) -> str:
    """``text`` with ``block`` appended after a blank line (a missing final newline is added)."""
    newline = newline_of(text)
    if text and not text.endswith("\n"):
        text += newline
    return text + newline + block


def remove_block(text: str, begin: str, end: str) -> str:
    """``text`` without the marked block and the blank line :func:`add_block` put before it."""
    span = find_block(text, begin, end)
    if span is None:
        return text
    head, tail = text[:span[0]], text[span[1]:]
    for blank in ("\r\n\r\n", "\n\n"):
        if head.endswith(blank):
            head = head[:-len(blank) // 2]
            break
    return head + tail


# ---------------------------------------------------------------- the blocks


@dataclass(frozen=True)
class Insert:
    """One block appended to an S3PRL module: ``key`` is its path relative to the folder holding
    hub.py (the manifest entry), ``name`` the marker words, ``body`` its code lines."""

    key: str
    name: str
    body: tuple[str, ...]
    detail: str  # the report line's explanation

    @property
    def begin(self) -> str:
        return f"# >>> recycle-distill {self.name} >>>"

    @property
    def end(self) -> str:
        return f"# <<< recycle-distill {self.name} <<<"

    def block(self, newline: str = "\n") -> str:
        """The marked block, in ``newline`` line endings."""
        lines = [self.begin,
                 f"# Added by recycle-distill's patch_hub.py ({self.detail});",
                 "# undo with: python patch_hub.py --revert <s3prl root>",
                 *self.body,
                 self.end]
        return newline.join(lines) + newline


def _allow_list_body() -> tuple[str, ...]:
    modules = sorted({module for module, _ in CHECKPOINT_CLASSES})
    classes = ", ".join(f"_recycle_distill_{module}.{name}" for module, name in CHECKPOINT_CLASSES)
    return (*(f"import {module} as _recycle_distill_{module}" for module in modules),
            "import torch.serialization as _recycle_distill_serialization",
            'if hasattr(_recycle_distill_serialization, "add_safe_globals"):  # torch >= 2.4',
            f"    _recycle_distill_serialization.add_safe_globals([{classes}])")


TRI_STAGE_MODULE = "recycle_distill.downstreams.cif_asr.tri_stage"
TRI_STAGE_FUNCTION = "get_tri_stage_schedule"

INSERTS = (
    Insert("downstream/runner.py", "checkpoint allow-list", _allow_list_body(),
           "weights-only torch.load of S3PRL's states-*.ckpt allows "
           + ", ".join(f"{module}.{name}" for module, name in CHECKPOINT_CLASSES)),
    Insert("schedulers.py", "tri-stage scheduler",
           ("try:",
            f"    from {TRI_STAGE_MODULE} import {TRI_STAGE_FUNCTION}  # noqa: F401",
            "except ImportError:  # recycle_distill is not importable here: only this scheduler is missing",
            "    pass"),
           "scheduler name tri_stage_schedule"),
)


# ---------------------------------------------------------------- planning


def plan_inserts(tree: Tree, plan: Plan) -> set[str]:
    """Plan appending every block of :data:`INSERTS`; returns the keys that end up patched by us."""
    patched = set()
    for insert in INSERTS:
        link = tree.package / insert.key
        if not link.is_file():
            plan.note("skip", link, f"not in this tree, so no {insert.name} block")
            continue
        path = link.resolve()
        current = path.read_bytes()
        try:
            text = utf8_text(current)
            span = find_block(text, insert.begin, insert.end)
        except PatchError as err:
            plan.warn(path, f"{err}; left alone")
        else:
            if span is None:
                plan_backup(plan, path, current)
                plan.write(path, current, add_block(text, insert.block(newline_of(text))).encode("utf-8"))
                plan.note("add", path, insert.detail)
                plan.changed += 1
                patched.add(insert.key)
                continue
            if text[span[0]:span[1]] == insert.block(newline_of(text)):
                plan.note("unchanged", path, f"{insert.name} already added")
            else:
                plan.warn(path, f"its recycle-distill {insert.name} block differs from the expected one "
                                "(edited, or written by another version); left alone. Run --revert first")
        if backup_path(path).exists():
            patched.add(insert.key)
    return patched


def plan_revert_inserts(tree: Tree, plan: Plan) -> set[str]:
    """Plan removing every block of :data:`INSERTS`; returns the keys left patched."""
    left = set()
    for insert in INSERTS:
        path = (tree.package / insert.key).resolve()
        if not path.is_file():
            continue
        made = lambda original, insert=insert: [add_block(original, insert.block(newline_of(original)))]
        if not plan_revert_block(plan, path, insert.begin, insert.end, made,
                                 restored=f"{insert.name} removed", what=f"recycle-distill {insert.name} block"):
            left.add(insert.key)
    return left


def plan_revert_block(plan: Plan, path: Path, begin: str, end: str, made: Callable[[str], list[str]],
                      restored: str, what: str) -> bool:
    """Plan removing a marked block from ``path``; returns False if something of ours is left.

    The backup is restored when the file is exactly one of ``made(original text)`` (what our
    patch makes of the backup); otherwise someone edited it since, and only the block is cut
    out, keeping their edits.  ``restored`` / ``what`` (``recycle-distill block``) word the report
    lines.
    """
    current = path.read_bytes()
    backup = backup_path(path)
    original = read_if_file(backup)
    try:
        text = utf8_text(current)
        span = find_block(text, begin, end)
    except PatchError as err:
        if original is None and begin.encode() not in current and end.encode() not in current:
            return True  # neither a backup nor a block: nothing of ours to revert
        plan.warn(path, f"{err}; left alone")
        return False
    if span is None:
        if original is None:
            return True
        if current == original:
            plan.removals.append(backup)
            return True
        plan.warn(path, f"has no {what} but differs from {backup.name}; left alone (backup kept)")
        return False
    try:
        original_text = utf8_text(original) if original is not None else None
    except PatchError:
        original_text = None  # not a backup we wrote of a file we could patch
    if original_text is not None and current in [made_text.encode("utf-8") for made_text in made(original_text)]:
        plan.write(path, current, original)
        plan.note("restore", path, restored)
    else:
        plan.write(path, current, remove_block(text, begin, end).encode("utf-8"))
        plan.note("unregister", path, f"removed the {what}")
        if original is not None:
            plan.warn(path, f"changed besides the {what} since patching; removed only the block")
    if original is not None:
        plan.removals.append(backup)
    plan.changed += 1
    return True
