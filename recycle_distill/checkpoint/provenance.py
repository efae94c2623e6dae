"""Read the training record of a student trained here, from a compact file or an export folder.

The record (teacher kind, name and sha256; data folders, hours and utterances; objective, steps,
precision; what :mod:`recycle_distill.training.provenance` builds) is the ``provenance``
metadata of a compact ``.safetensors`` file (written by
:func:`recycle_distill.checkpoint.save_compact`) and the ``provenance`` entry of the
``recycle_distill`` block in a Hugging Face export's ``config.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from safetensors import safe_open

from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.util.marker_json import our_block
from recycle_distill.util.messages import plain

__all__ = ["read_provenance", "PROVENANCE_LIMIT"]

# A record is a few hundred bytes; a larger one (or a larger export config.json) is refused.
PROVENANCE_LIMIT = 1 << 16
CONFIG_LIMIT = 1 << 20


def read_provenance(path: str) -> Optional[dict[str, Any]]:
    """The record of a compact file or of an export folder, or None when it has none (a
    converted, released or random student); :class:`CheckpointError` for a damaged one."""
    if os.path.isdir(path):
        return _from_folder(path)
    try:
        with safe_open(path, framework="pt") as handle:
            text = (handle.metadata() or {}).get("provenance")
    except Exception as err:  # noqa: BLE001  (SafetensorError, OSError: unreadable)
        raise CheckpointError(f"{plain(path)}: truncated or corrupt safetensors file "
                              f"({plain(str(err), 200)})") from None
    if text is None:
        return None
    try:
        record = json.loads(text) if len(text) <= PROVENANCE_LIMIT else None
    except (ValueError, RecursionError):
        record = None
    return _checked(record, path)


def _from_folder(directory: str) -> Optional[dict[str, Any]]:
    config_path = os.path.join(directory, "config.json")
    meta = our_block(config_path, CONFIG_LIMIT)  # None: not an export of ours; loading it says why
    if meta is None or meta.get("provenance") is None:
        return None
    return _checked(meta["provenance"], config_path)


def _checked(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict) or len(json.dumps(record)) > PROVENANCE_LIMIT:
        raise CheckpointError(f"{plain(where)}: damaged metadata: 'provenance' is not a JSON object of at most "
                              f"{PROVENANCE_LIMIT} characters")
    return record
