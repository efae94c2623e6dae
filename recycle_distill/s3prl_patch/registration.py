"""Registering the student families in S3PRL's hub.py: a marked block of hubconf imports.

S3PRL finds an upstream by name among the globals of ``s3prl/hub.py``, so registering means
star-importing each family's hubconf there.  The block sits between marker comments so that it
can be recognised, compared and removed again without a backup.
"""

from __future__ import annotations

from pathlib import Path

from ..families import FAMILY_NAMES
from .errors import PatchError
from .files import backup_path, read_if_file
from .plan import Plan, plan_backup
from .tree import Tree

FAMILIES = FAMILY_NAMES
HUB_BEGIN = "# >>> recycle-distill upstreams >>>"
HUB_END = "# <<< recycle-distill upstreams <<<"


# ---------------------------------------------------------------- pure text functions


def newline_of(text: str) -> str:
    """The line ending ``text`` uses (CRLF if it has any, else LF), for lines we add to it."""
    return "\r\n" if "\r\n" in text else "\n"


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
    newline = newline_of(text)
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


# ---------------------------------------------------------------- planning


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
        if text[span[0]:span[1]] == hub_block(copy, newline_of(text)):
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


def plan_revert_hub(plan: Plan, hub: Path) -> bool:
    """Plan removing the registration from hub.py; returns False if something is left."""
    current = hub.read_bytes()
    backup = backup_path(hub)
    original = read_if_file(backup)
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
    # Restore the backup only when hub.py is exactly what we made of it; otherwise someone
    # edited it since, and cutting out just our block keeps their edits.
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
