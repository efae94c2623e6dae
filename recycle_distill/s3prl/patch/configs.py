"""The SUPERB config tweaks: uncommenting the scheduler block and raising the SID lr.

The patches edit the YAML as text, line by line, rather than loading and dumping it: S3PRL's
configs are full of comments and hand layout, and a dump would rewrite all of it.  Each
patch only applies to the exact unpatched S3PRL text; anything else raises PatchError, and the
result is parsed back to check the tweaks really took.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from recycle_distill.util.safe_yaml import safe_load_bounded
from recycle_distill.s3prl.patch.base import (
    TASKS,
    PatchError,
    TaskTweak,
    Tree,
    backup_path,
    format_lr,
    read_if_file,
    utf8_text,
)
from recycle_distill.s3prl.patch.plan import Plan, plan_backup

_COMMENTED_SCHEDULER = re.compile(r"#[ ]?scheduler:[ \t]*")
_COMMENTED_SCHED_KEY = re.compile(r"#[ ]?[ \t]+(name|num_warmup_steps):[ \t]*\S.*")
_ACTIVE_SCHEDULER = re.compile(r"scheduler:[ \t]*(#.*)?")
_OPTIMIZER = re.compile(r"optimizer:[ \t]*(#.*)?")
_LR_LINE = re.compile(r"(?P<pre>[ \t]+lr:[ \t]*)(?P<value>[^\s#]+)(?P<post>.*)")


# ---------------------------------------------------------------- pure text functions


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
        parsed = safe_load_bounded(value)
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, float) or parsed != old_lr:
        raise PatchError(f"optimizer lr is {value}, expected {format_lr(old_lr)}")
    patched = list(lines)
    patched[index] = match.group("pre") + new_lr + match.group("post") + _ending(lines[index])
    return patched


def check_tweaked(text: str, task: TaskTweak) -> None:
    """Raise PatchError unless ``text`` parses to a config carrying the task's tweaks."""
    try:
        data = safe_load_bounded(text)
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


def patch_config_text(text: str, task: TaskTweak) -> str:
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


def patched_original(original: bytes | None, task: TaskTweak) -> bytes | None:
    """What our patch makes of a backed-up ``original``: the content a config has while it
    is still exactly as we left it.  None when there is no backup or it does not patch."""
    if original is None:
        return None
    try:
        return patch_config_text(utf8_text(original), task).encode("utf-8")
    except PatchError:
        return None


# ---------------------------------------------------------------- planning


def plan_configs(tree: Tree, plan: Plan, shipped_configs: Path) -> set[str]:
    """Plan the SUPERB config tweaks; returns the configs that end up patched by us.

    ``shipped_configs`` is the folder of pre-patched configs that the report points to when
    the tree has no configs of its own (a pip-installed s3prl).
    """
    patched = set()
    present = [task for task in TASKS if (tree.downstream / task.config).is_file()]
    if not present:
        plan.lines.append(
            "  No downstream configs to patch here (a pip-installed s3prl ships none). Use the "
            f"pre-patched SUPERB configs instead: run_downstream.py ... -c "
            f"{shipped_configs}/<task>.yaml (also installed as "
            "recycle_distill/s3prl/downstream_configs/; see its README.md).")
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
        original = read_if_file(backup)
        if original is not None and current == patched_original(original, task):
            plan.note("unchanged", shown, f"{task.key}: already patched")
            patched.add(task.config)
            continue
        try:
            text = utf8_text(current)
        except PatchError as err:
            plan.warn(shown, f"{task.key}: {err}; left alone")
            if original is not None:
                patched.add(task.config)
            continue
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


def plan_revert_configs(tree: Tree, plan: Plan) -> set[str]:
    """Plan restoring every config we patched; returns the manifest entries left patched."""
    left = set()
    for task in TASKS:
        if not task.changes:
            continue
        entry = f"downstream/{task.config}"
        path = (tree.package / entry).resolve()
        backup = backup_path(path)
        if not backup.is_file():
            continue
        original, current = backup.read_bytes(), read_if_file(path)
        expected = patched_original(original, task)
        if current == original:
            plan.note("unchanged", path, f"{task.key}: already original")
        elif current is not None and current == expected:
            plan.write(path, current, original)
            plan.note("restore", path, f"{task.key}")
            plan.changed += 1
        else:
            plan.warn(path, f"{task.key}: changed since patch_hub.py patched it; left alone "
                            f"(original kept in {backup.name})")
            left.add(entry)
            continue
        plan.removals.append(backup)
    return left
