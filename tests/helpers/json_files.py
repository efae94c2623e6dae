"""Editing a JSON file a test wrote (an exported folder's config.json) in place."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable


def edit_config(folder: pathlib.Path, change: Callable[[dict[str, Any]], Any]) -> pathlib.Path:
    """Apply ``change`` to ``folder/config.json`` and write it back; returns the file's path."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    return path
