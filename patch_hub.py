#!/usr/bin/env python3
"""Register the recycle-distill upstreams in S3PRL and apply the SUPERB config tweaks.

Usage::

    python patch_hub.py <s3prl root>             # register upstreams + tweak configs
    python patch_hub.py --copy <s3prl root>      # copy upstreams/<family> into s3prl/upstream/
    python patch_hub.py --dry-run <s3prl root>   # print a unified diff, write nothing
    python patch_hub.py --revert <s3prl root>    # undo everything, byte for byte

``<s3prl root>`` is either a git checkout of S3PRL (recognised by ``s3prl/hub.py`` and
``s3prl/downstream/``) or an installed ``s3prl`` package directory such as
``site-packages/s3prl`` (recognised by ``hub.py`` and ``downstream/``).  A pip-installed
S3PRL ships no downstream configs; use the pre-patched ones in ``downstream_configs/``.

What it does:

* appends a marked block to ``hub.py`` that imports the hubconf of every student family
  (armhubert, maskhubert, starhubert, fithubert) from the installed
  ``recycle_distill.upstreams`` package, or, with ``--copy``, copies ``upstreams/<family>``
  from this repository into ``s3prl/upstream/<family>`` and imports it from there, the way
  S3PRL's own hub.py imports its upstreams;
* uncomments the learning-rate scheduler block in the PR, KS, IC, SID, ER, ASR, SF and ASV
  configs and raises the SID learning rate from 1.0e-4 to 1.0e-3 (QbE and SD are unchanged).

Every file it changes is backed up once as ``<file>.recycle-distill.orig``; copied folders
are recorded in ``.recycle-distill-manifest.json`` next to ``hub.py``.  Files whose content is
neither the expected original nor our patched version are reported and left alone.

Exit status: 0 when everything is in the wanted state, 1 when some file was left alone
(see the warnings), 2 when the tree was refused.

Needs only the standard library and PyYAML.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml

FAMILIES = ("armhubert", "maskhubert", "starhubert", "fithubert")
REPO_DIR = Path(__file__).resolve().parent
UPSTREAMS_DIR = REPO_DIR / "upstreams"
DOWNSTREAM_CONFIGS_DIR = REPO_DIR / "downstream_configs"

BACKUP_SUFFIX = ".recycle-distill.orig"
MANIFEST_NAME = ".recycle-distill-manifest.json"
HUB_BEGIN = "# >>> recycle-distill upstreams >>>"
HUB_END = "# <<< recycle-distill upstreams <<<"

EXIT_OK, EXIT_WARNINGS, EXIT_REFUSED = 0, 1, 2


class PatchError(Exception):
    """A file is not in the state a patch expects; the message says why."""


class RefusedError(Exception):
    """The tree cannot be patched at all; the message says why."""


# --------------------------------------------------------------------------------------
# The SUPERB tasks
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
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
    Task("PR", "Phoneme Recognition", "ctc", "ctc/libriphone.yaml", "ctc_libriphone.yaml", True),
    Task("KS", "Keyword Spotting", "speech_commands", "speech_commands/config.yaml",
         "speech_commands.yaml", True),
    Task("IC", "Intent Classification", "fluent_commands", "fluent_commands/config.yaml",
         "fluent_commands.yaml", True),
    Task("SID", "Speaker Identification", "voxceleb1", "voxceleb1/config.yaml", "voxceleb1.yaml",
         True, old_lr=1.0e-4, new_lr="1.0e-3"),
    Task("ER", "Emotion Recognition", "emotion", "emotion/config.yaml", "emotion.yaml", True),
    Task("ASR", "Automatic Speech Recognition", "asr", "asr/config.yaml", "asr.yaml", True),
    Task("SF", "Slot Filling", "ctc", "ctc/snips.yaml", "ctc_snips.yaml", True),
    # In git, sv_voxceleb1/config.yaml is a symlink to configs/amsoftmax.yaml: the target
    # is patched and the link is kept.
    Task("ASV", "Automatic Speaker Verification", "sv_voxceleb1", "sv_voxceleb1/config.yaml",
         "sv_voxceleb1.yaml", True),
    Task("QbE", "Query by Example", "quesst14_dtw", "quesst14_dtw/config.yaml",
         "quesst14_dtw.yaml"),
    Task("SD", "Speaker Diarization", "diarization", "diarization/config.yaml",
         "diarization.yaml"),
)


def format_lr(value: float) -> str:
    """Format a learning rate the way S3PRL's configs write it, e.g. ``1.0e-4``."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# --------------------------------------------------------------------------------------
# Config patching (pure text functions)
# --------------------------------------------------------------------------------------

_COMMENTED_SCHEDULER = re.compile(r"#[ ]?scheduler:[ \t]*")
_COMMENTED_SCHED_KEY = re.compile(r"#[ ]?[ \t]+(name|num_warmup_steps):[ \t]*\S.*")
_ACTIVE_SCHEDULER = re.compile(r"scheduler:[ \t]*(#.*)?")
_OPTIMIZER = re.compile(r"optimizer:[ \t]*(#.*)?")
_LR_LINE = re.compile(r"(?P<pre>[ \t]+lr:[ \t]*)(?P<value>[^\s#]+)(?P<post>.*)")


def _content(line: str) -> str:
    """A line without its line ending."""
    return line.rstrip("\r\n")


def _ending(line: str) -> str:
    """The line ending of a line (may be empty for the last line)."""
    return line[len(_content(line)):]


def _uncomment(line: str) -> str:
    """Remove the leading ``#`` and at most one space after it, keeping the line ending."""
    body = _content(line)[1:]
    if body.startswith(" "):
        body = body[1:]
    return body + _ending(line)


def uncomment_scheduler(lines: list[str]) -> list[str]:
    """Uncomment exactly the ``scheduler:`` / ``name:`` / ``num_warmup_steps:`` lines.

    The comment lines around the block (and any commented specaug block) are not touched.
    Raises PatchError unless the text holds exactly one such commented block and no active
    top-level ``scheduler:`` key.
    """
    if any(_ACTIVE_SCHEDULER.fullmatch(_content(line)) for line in lines):
        raise PatchError("it already has an active 'scheduler:' block")
    starts = [i for i, line in enumerate(lines) if _COMMENTED_SCHEDULER.fullmatch(_content(line))]
    if len(starts) != 1:
        raise PatchError(f"expected one commented '# scheduler:' line, found {len(starts)}")
    start = starts[0]
    body = lines[start + 1:start + 3]
    keys = []
    for line in body:
        match = _COMMENTED_SCHED_KEY.fullmatch(_content(line))
        if match is None:
            break
        keys.append(match.group(1))
    if sorted(keys) != ["name", "num_warmup_steps"]:
        raise PatchError("the commented scheduler block is not '# scheduler:' followed by "
                         "its 'name:' and 'num_warmup_steps:' lines")
    if start + 3 < len(lines):
        after = _uncomment(lines[start + 3]) if lines[start + 3].startswith("#") else ""
        if _content(after)[:1] in (" ", "\t") and _content(after).strip():
            raise PatchError("the commented scheduler block has more keys than "
                             "'name:' and 'num_warmup_steps:'")
    patched = list(lines)
    for i in range(start, start + 3):
        patched[i] = _uncomment(lines[i])
    return patched


def set_optimizer_lr(lines: list[str], old_lr: float, new_lr: str) -> list[str]:
    """Replace the ``lr:`` value of the top-level ``optimizer:`` block.

    The current value must be a YAML float equal to ``old_lr``; ``new_lr`` is written as
    given (a YAML float token such as ``1.0e-3``).  Raises PatchError otherwise.
    """
    starts = [i for i, line in enumerate(lines) if _OPTIMIZER.fullmatch(_content(line))]
    if len(starts) != 1:
        raise PatchError(f"expected one top-level 'optimizer:' block, found {len(starts)}")
    lr_lines = []
    for i in range(starts[0] + 1, len(lines)):
        text = _content(lines[i])
        if text and not text[0].isspace() and not text.startswith("#"):
            break  # the next top-level key ends the block
        if _LR_LINE.fullmatch(text):
            lr_lines.append(i)
    if len(lr_lines) != 1:
        raise PatchError(f"expected one 'lr:' line under 'optimizer:', found {len(lr_lines)}")
    index = lr_lines[0]
    match = _LR_LINE.fullmatch(_content(lines[index]))
    value = match.group("value")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, float) or parsed != old_lr:
        raise PatchError(f"optimizer lr is {value}, expected {format_lr(old_lr)}")
    patched = list(lines)
    patched[index] = match.group("pre") + new_lr + match.group("post") + _ending(lines[index])
    return patched


def check_tweaked(text: str, task: Task) -> None:
    """Raise PatchError unless ``text`` parses to a config carrying the task's tweaks."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PatchError(f"it does not parse as YAML ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise PatchError("it does not parse to a YAML mapping")
    if task.scheduler:
        scheduler = data.get("scheduler")
        if not (isinstance(scheduler, dict) and "name" in scheduler
                and isinstance(scheduler.get("num_warmup_steps"), int)):
            raise PatchError("it has no 'scheduler' with 'name' and 'num_warmup_steps'")
    if task.new_lr is not None:
        optimizer = data.get("optimizer")
        lr = optimizer.get("lr") if isinstance(optimizer, dict) else None
        if not isinstance(lr, float) or lr != float(task.new_lr):
            raise PatchError(f"its optimizer lr is {lr!r}, expected {task.new_lr}")


def patch_config_text(text: str, task: Task) -> str:
    """Return ``text`` with the task's SUPERB tweaks applied.

    Raises PatchError when ``text`` is not an unpatched S3PRL config of that task.  Tasks
    without tweaks (QbE, SD) are returned unchanged.
    """
    if not task.changes:
        return text
    lines = text.splitlines(keepends=True)
    if task.scheduler:
        lines = uncomment_scheduler(lines)
    if task.new_lr is not None:
        lines = set_optimizer_lr(lines, task.old_lr, task.new_lr)
    patched = "".join(lines)
    check_tweaked(patched, task)
    return patched


# --------------------------------------------------------------------------------------
# hub.py registration (pure text functions)
# --------------------------------------------------------------------------------------


def hub_block(copy: bool, newline: str = "\n") -> str:
    """The marked block appended to hub.py, naming every family explicitly."""
    if copy:
        how = "folders copied into s3prl/upstream/ by patch_hub.py --copy"
        imports = [f"from s3prl.upstream.{family}.hubconf import *" for family in FAMILIES]
    else:
        how = "hubconfs of the installed recycle_distill package"
        imports = [f"from recycle_distill.upstreams.{family}.hubconf import *"
                   for family in FAMILIES]
    lines = [HUB_BEGIN,
             f"# Added by recycle-distill's patch_hub.py ({how});",
             "# undo with: python patch_hub.py --revert <s3prl root>",
             *imports,
             HUB_END]
    return newline.join(lines) + newline


def find_hub_block(text: str) -> tuple[int, int] | None:
    """Character span of the marked block (marker lines included), or None if absent.

    Raises PatchError when the markers are unbalanced or repeated.
    """
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip() == HUB_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == HUB_END]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise PatchError("its recycle-distill marker comments are unbalanced or repeated")
    start = sum(len(line) for line in lines[:begins[0]])
    end = sum(len(line) for line in lines[:ends[0] + 1])
    return start, end


def add_hub_block(text: str, copy: bool) -> str:
    """Append the block to hub.py's text, after a blank line."""
    newline = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith("\n"):
        text += newline
    return text + newline + hub_block(copy, newline)


def remove_hub_block(text: str) -> str:
    """Remove the marked block and the blank line add_hub_block put before it."""
    span = find_hub_block(text)
    if span is None:
        return text
    head, tail = text[:span[0]], text[span[1]:]
    for blank in ("\r\n\r\n", "\n\n"):
        if head.endswith(blank):
            head = head[:-len(blank) // 2]
            break
    return head + tail


# --------------------------------------------------------------------------------------
# File helpers
# --------------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and os.replace.

    The file mode is ``mode`` if given, else the mode of the file being replaced, else
    0o644 filtered by the umask.
    """
    if mode is None:
        if path.exists():
            mode = path.stat().st_mode & 0o7777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o644 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def unified_diff(old: str, new: str, label: str) -> str:
    """A git-style unified diff of ``old`` -> ``new`` for the file ``label``."""

    def split(text: str) -> list[str]:
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n\\ No newline at end of file\n"
        return lines

    return "".join(difflib.unified_diff(split(old), split(new), f"a/{label}", f"b/{label}"))


# --------------------------------------------------------------------------------------
# Locating the tree
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Planning and applying
# --------------------------------------------------------------------------------------


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
    tree_removals: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changed: int = 0

    def note(self, status: str, path: Path | str, detail: str = "") -> None:
        """Record one report line."""
        label = self.tree.label(path) if isinstance(path, Path) else path
        self.lines.append(f"  {status:<11} {label}{f'  ({detail})' if detail else ''}")

    def warn(self, path: Path | str, message: str) -> None:
        """Record a warning about a file that is left alone."""
        label = self.tree.label(path) if isinstance(path, Path) else path
        self.warnings.append(f"WARNING: {label}: {message}")

    def write(self, path: Path, old: bytes | None, new: bytes, show_diff: bool = True,
              mode_from: Path | None = None) -> None:
        """Plan writing ``new`` to ``path`` (whose content is ``old``)."""
        label = self.tree.label(path) if show_diff else ""
        self.writes.append(Write(path, old, new, label, mode_from))


def read_manifest(tree: Tree, plan: Plan) -> dict:
    """The manifest of a previous run (empty if none or unreadable)."""
    path = tree.package / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        plan.warn(path, "unreadable manifest; ignored")
        return {}
    return data if isinstance(data, dict) else {}


def plan_manifest(tree: Tree, plan: Plan, patched: set[str], copied: dict) -> None:
    """Plan writing the manifest, or removing it when nothing is left to revert."""
    path = tree.package / MANIFEST_NAME
    old = path.read_bytes() if path.is_file() else None
    if not patched and not copied:
        if old is not None:
            plan.removals.append(path)
        return
    manifest = {"tool": "recycle-distill patch_hub.py", "format": 1,
                "patched": sorted(patched), "copied": dict(sorted(copied.items()))}
    new = (json.dumps(manifest, indent=2) + "\n").encode()
    if new != old:
        plan.write(path, old, new, show_diff=False)


def plan_hub(tree: Tree, plan: Plan, copy: bool) -> bool:
    """Plan the hub.py registration; returns True when hub.py ends up patched by us."""
    hub = (tree.package / "hub.py").resolve()
    current = hub.read_bytes()
    text = current.decode("utf-8")
    try:
        span = find_hub_block(text)
    except PatchError as err:
        plan.warn(hub, f"{err}; left alone")
        return backup_path(hub).exists()
    if span is not None:
        if text[span[0]:span[1]] == hub_block(copy, "\r\n" if "\r\n" in text else "\n"):
            plan.note("unchanged", hub, "upstreams already registered")
            return backup_path(hub).exists()
        previous = "a default run" if copy else "a --copy run"
        plan.warn(hub, "already has a recycle-distill block that differs from the expected one "
                       f"(written by {previous}, or edited); left alone. Run --revert first "
                       "to switch modes")
        return backup_path(hub).exists()
    new = add_hub_block(text, copy).encode("utf-8")
    plan_backup(plan, hub, current)
    plan.write(hub, current, new)
    source = "s3prl/upstream/<family>" if copy else "recycle_distill.upstreams"
    plan.note("register", hub, f"{', '.join(FAMILIES)} from {source}")
    plan.changed += 1
    return True


def plan_backup(plan: Plan, path: Path, original: bytes) -> None:
    """Plan keeping ``original`` as the backup of ``path`` (unless it already is)."""
    backup = backup_path(path)
    old = backup.read_bytes() if backup.is_file() else None
    if old != original:
        plan.write(backup, old, original, show_diff=False, mode_from=path)


def plan_copies(tree: Tree, plan: Plan, manifest: dict) -> dict:
    """Plan copying upstreams/<family> into s3prl/upstream/; returns the copied-folder record."""
    copied = dict(manifest.get("copied") or {})
    upstream = tree.package / "upstream"
    if not upstream.is_dir():
        raise RefusedError(f"--copy needs {tree.label(upstream)}/, which is missing")
    for family in FAMILIES:
        src = UPSTREAMS_DIR / family
        if not (src / "hubconf.py").is_file():
            raise RefusedError(f"--copy needs {src}/hubconf.py, which is missing")
    for family in FAMILIES:
        src, dst = UPSTREAMS_DIR / family, upstream / family
        key = dst.relative_to(tree.package).as_posix()
        wanted = tree_hashes(src)
        if dst.exists():
            current = tree_hashes(dst) if dst.is_dir() else None
            if current == wanted:
                plan.note("unchanged", dst, "already copied")
                continue
            if current is None or copied.get(key) != current:
                plan.warn(dst, "exists and differs from upstreams/" + family + "; left alone")
                continue
        plan.copies.append((src, dst))
        plan.note("copy", dst, f"from {src}")
        copied[key] = wanted
        plan.changed += 1
    return copied


def plan_configs(tree: Tree, plan: Plan) -> set[str]:
    """Plan the SUPERB config tweaks; returns the configs that end up patched by us."""
    patched = set()
    present = [task for task in TASKS if (tree.downstream / task.config).is_file()]
    if not present:
        plan.lines.append(
            "  No downstream configs to patch here (a pip-installed s3prl ships none). Use the "
            f"pre-patched SUPERB configs instead: run_downstream.py ... -c "
            f"{DOWNSTREAM_CONFIGS_DIR}/<task>.yaml (also installed as "
            "recycle_distill/downstream_configs/; see its README.md).")
        return patched
    for task in TASKS:
        link = tree.downstream / task.config
        if not task.changes:
            plan.note("skip", link, f"{task.key}: no tweaks needed")
            continue
        if not link.is_file():
            plan.warn(link, f"{task.key} config is missing; skipped")
            continue
        path = link.resolve()
        shown = link if path == link else f"{tree.label(link)} -> {os.path.relpath(path, link.parent)}"
        current = path.read_bytes()
        backup = backup_path(path)
        original = backup.read_bytes() if backup.is_file() else None
        if original is not None:
            try:
                expected = patch_config_text(original.decode("utf-8"), task).encode("utf-8")
            except PatchError:
                expected = None
            if current == expected:
                plan.note("unchanged", shown, f"{task.key}: already patched")
                patched.add(task.config)
                continue
        text = current.decode("utf-8")
        try:
            new = patch_config_text(text, task).encode("utf-8")
        except PatchError as err:
            if original is not None:
                plan.warn(shown, f"{task.key}: changed since patch_hub.py patched it "
                                 f"(backup: {backup.name}); left alone")
                patched.add(task.config)
                continue
            try:
                check_tweaked(text, task)
            except PatchError:
                plan.warn(shown, f"{task.key}: {err}; left alone")
                continue
            plan.note("unchanged", shown, f"{task.key}: already has the tweaks")
            continue
        plan_backup(plan, path, current)
        plan.write(path, current, new)
        plan.note("patch", shown, f"{task.key}: {', '.join(task.changes)}")
        plan.changed += 1
        patched.add(task.config)
    return patched


def plan_patch(tree: Tree, copy: bool) -> Plan:
    """Plan registering the upstreams and tweaking the configs."""
    plan = Plan(tree)
    manifest = read_manifest(tree, plan)
    copied = plan_copies(tree, plan, manifest) if copy else dict(manifest.get("copied") or {})
    patched = {entry for entry in manifest.get("patched") or [] if isinstance(entry, str)}
    if plan_hub(tree, plan, copy):
        patched.add("hub.py")
    patched |= {f"downstream/{config}" for config in plan_configs(tree, plan)}
    plan_manifest(tree, plan, patched, copied)
    return plan


def plan_revert(tree: Tree) -> Plan:
    """Plan undoing a previous run: restore backups, drop the hub block and the copies."""
    plan = Plan(tree)
    manifest = read_manifest(tree, plan)
    left_patched, left_copied = set(), {}

    hub = (tree.package / "hub.py").resolve()
    if not plan_revert_hub(plan, hub):
        left_patched.add("hub.py")

    for task in TASKS:
        if not task.changes:
            continue
        entry = f"downstream/{task.config}"
        path = (tree.package / entry).resolve()
        backup = backup_path(path)
        if not backup.is_file():
            continue
        original, current = backup.read_bytes(), path.read_bytes() if path.is_file() else None
        try:
            expected = patch_config_text(original.decode("utf-8"), task).encode("utf-8")
        except PatchError:
            expected = None
        if current == original:
            plan.note("unchanged", path, f"{task.key}: already original")
        elif current is not None and current == expected:
            plan.write(path, current, original)
            plan.note("restore", path, f"{task.key}")
            plan.changed += 1
        else:
            plan.warn(path, f"{task.key}: changed since patch_hub.py patched it; left alone "
                            f"(original kept in {backup.name})")
            left_patched.add(entry)
            continue
        plan.removals.append(backup)

    for key, hashes in sorted((manifest.get("copied") or {}).items()):
        dst = tree.package / key
        if not dst.exists():
            continue
        if dst.is_dir() and tree_hashes(dst) == hashes:
            plan.tree_removals.append(dst)
            plan.note("remove", dst, "copied upstream")
            plan.changed += 1
        else:
            plan.warn(dst, "changed since patch_hub.py --copy copied it; left alone")
            left_copied[key] = hashes

    plan_manifest(tree, plan, left_patched, left_copied)
    return plan


def plan_revert_hub(plan: Plan, hub: Path) -> bool:
    """Plan removing the registration from hub.py; returns False if something is left."""
    current = hub.read_bytes()
    backup = backup_path(hub)
    original = backup.read_bytes() if backup.is_file() else None
    text = current.decode("utf-8")
    try:
        span = find_hub_block(text)
    except PatchError as err:
        plan.warn(hub, f"{err}; left alone")
        return False
    if span is None:
        if original is None:
            return True
        if current == original:
            plan.removals.append(backup)
            return True
        plan.warn(hub, f"has no recycle-distill block but differs from {backup.name}; left "
                       "alone (backup kept)")
        return False
    stripped = remove_hub_block(text).encode("utf-8")
    ours = original is not None and any(
        add_hub_block(original.decode("utf-8"), copy).encode("utf-8") == current
        for copy in (False, True))
    if ours:
        plan.write(hub, current, original)
        plan.note("restore", hub, "registration removed")
    else:
        plan.write(hub, current, stripped)
        plan.note("unregister", hub, "removed the recycle-distill block")
        if original is not None:
            plan.warn(hub, "changed besides the recycle-distill block since patching; removed "
                           "only the block")
    if original is not None:
        plan.removals.append(backup)
    plan.changed += 1
    return True


def apply(plan: Plan) -> None:
    """Carry out a plan: copies, writes (backups first, in plan order), then removals."""
    for src, dst in plan.copies:
        copy_tree_atomically(src, dst)
    for write in plan.writes:
        mode = write.mode_from.stat().st_mode & 0o7777 if write.mode_from else None
        atomic_write(write.path, write.new, mode)
    for path in plan.removals:
        path.unlink(missing_ok=True)
    for folder in plan.tree_removals:
        shutil.rmtree(folder)


def show_diff(plan: Plan) -> str:
    """The unified diff of every user-visible file the plan writes."""
    return "".join(unified_diff((write.old or b"").decode("utf-8"), write.new.decode("utf-8"),
                                write.label)
                   for write in plan.writes if write.label)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Register the recycle-distill upstreams (armhubert, maskhubert, "
                    "starhubert, fithubert) in S3PRL's hub.py and apply the SUPERB "
                    "fine-tuning tweaks to its downstream configs.",
        epilog="Exit status: 0 done or nothing to do, 1 some file left alone (see warnings), "
               "2 refused.")
    parser.add_argument("root", type=Path,
                        help="S3PRL git checkout root (holding s3prl/hub.py and "
                             "s3prl/downstream/), or an installed s3prl package directory")
    parser.add_argument("--copy", action="store_true",
                        help="copy upstreams/<family> into s3prl/upstream/<family> and import "
                             "them from there instead of from the installed recycle_distill")
    parser.add_argument("--dry-run", action="store_true",
                        help="print a unified diff of what would change and write nothing")
    parser.add_argument("--revert", action="store_true",
                        help="restore every file patched by an earlier run, remove the "
                             "registration, copied upstreams and backups")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = parse_args(argv)
    try:
        tree = locate_tree(args.root)
        plan = plan_revert(tree) if args.revert else plan_patch(tree, args.copy)
    except RefusedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    kind = "S3PRL git checkout" if tree.checkout else "installed s3prl package"
    print(f"{kind}: {tree.root}")
    if args.dry_run:
        print(show_diff(plan), end="")
    else:
        apply(plan)
    for line in plan.lines:
        print(line)
    for warning in plan.warnings:
        print(warning, file=sys.stderr)

    verb = "reverted" if args.revert else "patched"
    if plan.changed == 0 and not plan.writes and not plan.removals:
        print(f"Nothing changed: already {verb}." if not plan.warnings
              else "Nothing changed.")
    elif args.dry_run:
        print(f"Dry run: {plan.changed} item(s) would change; nothing was written.")
    else:
        print(f"Done: {plan.changed} item(s) {verb}."
              + ("" if args.revert else f" Originals kept as *{BACKUP_SUFFIX}; "
                 "undo with --revert."))
    if not args.revert and not args.copy and not args.dry_run and plan.changed \
            and importlib.util.find_spec("recycle_distill") is None:
        print("note: recycle_distill is not importable by this Python; install it "
              "(pip install <this repo>) where S3PRL runs, or use --copy.")
    return EXIT_WARNINGS if plan.warnings else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
