"""The two ways a patch_hub.py run can fail, and the exit statuses it reports."""

from __future__ import annotations

# 0: everything is in the wanted state; 1: some file was left alone (see the warnings);
# 2: the tree was refused and nothing was written.
EXIT_OK, EXIT_WARNINGS, EXIT_REFUSED = 0, 1, 2


class PatchError(Exception):
    """A file is not in the state a patch expects; the message says why."""


class RefusedError(Exception):
    """The tree cannot be patched at all; the message says why."""
