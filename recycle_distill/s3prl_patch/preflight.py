"""Before a run writes anything: clear what an interrupted run left, check every target.

An unwritable folder found only while writing would leave the tree half patched, so every
folder a plan writes into, replaces in or removes from is checked first and the run is refused
(nothing written) if any is not writable.  Temp files and folders are named
``.<name>.<8 random characters>.tmp`` next to their target (files.py); one left by a killed run
is removed by the next run, which recognises it by that exact pattern next to a target it knows.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import RefusedError
from .files import BACKUP_SUFFIX
from .plan import Plan
from .registration import FAMILIES
from .shim import SHIM_KEY
from .tasks import TASKS
from .tree import Tree


def _known_targets(tree: Tree) -> list[Path]:
    """Every file or folder a patch or revert may write (temps are made next to these)."""
    from .manifest import MANIFEST_NAME

    targets = [tree.package / "hub.py", tree.package / MANIFEST_NAME, tree.package / SHIM_KEY]
    targets += [tree.package / "upstream" / family for family in FAMILIES]
    for task in TASKS:
        config = tree.downstream / task.config
        targets += [config, config.resolve() if config.exists() else config]
    targets += [path.with_name(path.name + BACKUP_SUFFIX) for path in list(targets)]
    return targets


def plan_stale_temps(tree: Tree, plan: Plan) -> None:
    """Plan removing the temp files/folders an interrupted run left next to our targets."""
    seen = set()
    for target in _known_targets(tree):
        folder = target.parent
        if not folder.is_dir():
            continue
        pattern = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
        for entry in folder.iterdir():
            if entry in seen or not pattern.fullmatch(entry.name) or entry.is_symlink():
                continue
            seen.add(entry)
            if entry.is_dir():
                plan.tree_removals.append(entry)
            else:
                plan.removals.append(entry)
            plan.note("clean", entry, "temporary file left by an interrupted run")


def check_writable(plan: Plan) -> None:
    """Raise RefusedError naming every folder the plan needs to write but cannot."""
    folders = {write.path.parent for write in plan.writes}
    folders |= {dst.parent for _, dst in plan.copies}
    folders |= {folder.parent for folder, _ in plan.folders}
    folders |= {path.parent for path in plan.removals}
    folders |= {path.parent for path in plan.tree_removals}
    folders |= {path for path in plan.tree_removals}  # rmtree empties it first
    blocked = sorted(str(plan.tree.label(folder)) for folder in folders
                     if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK))
    if blocked:
        raise RefusedError("cannot write in " + ", ".join(blocked) + "; nothing was changed (fix the permissions "
                           "and run again)")
