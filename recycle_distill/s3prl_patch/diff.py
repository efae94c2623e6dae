"""Unified diffs of a plan, for ``--dry-run``."""

from __future__ import annotations

import difflib

from .plan import Plan


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
