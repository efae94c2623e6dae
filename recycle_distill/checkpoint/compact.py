"""Our compact student checkpoint: safetensors weights plus family/config/version metadata.

A compact file holds the student's weights only (no teacher, no optimizer) and carries
everything needed to rebuild the model, so it loads without a ``-g`` config. A trained student
also carries its ``provenance`` (teacher, data, objective, steps, precision: what
:mod:`recycle_distill.training.provenance` records), read back by
:func:`recycle_distill.checkpoint.provenance.read_provenance`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from recycle_distill.util.atomic import atomic_write as _atomic_write
from recycle_distill.util.atomic import default_mode
from recycle_distill.util.messages import plain, short_repr
from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.checkpoint.finite import check_finite_on_export, check_finite_on_load

FORMAT_NAME = "recycle-distill-student"
FORMAT_VERSION = 1

__all__ = ["save_compact", "read_compact", "is_safetensors", "atomic_write", "FORMAT_NAME", "FORMAT_VERSION"]


def is_safetensors(path: str) -> bool:
    """True if ``path`` starts like a safetensors file (8-byte header size, then JSON)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_size = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_size < os.path.getsize(path)


def atomic_write(path: str, write: Any) -> None:
    """Call ``write(temp_path)`` then rename over ``path``: readers never see half a file.

    Temp files are ``.tmp-<random><name>`` (a resumed training run removes those a killed
    write left); the result gets the mode a plain ``open()`` would give.
    """
    _atomic_write(path, write, mode=default_mode(), prefix=".tmp-", suffix=os.path.basename(path))


def save_compact(path: str, state_dict: Mapping[str, torch.Tensor], family: str, config: Mapping[str, Any],
                 provenance: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``state_dict`` with ``family``, the distiller ``config`` and the ``provenance`` of a
    trained student (if given) as metadata, atomically.

    A failure leaves an earlier file at ``path`` as it was; anything there but a regular file (a
    device, a FIFO, a folder) is refused with :class:`recycle_distill.util.atomic.OutputError`.
    """
    check_finite_on_export(state_dict, path)
    tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "family": family,
        "config": json.dumps(dict(config), sort_keys=True),
    }
    if provenance is not None:
        metadata["provenance"] = json.dumps(dict(provenance), sort_keys=True)
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


def read_compact(path: str, *, allow_non_finite: bool = False) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Read a compact checkpoint -> (state_dict, family, distiller config dict).

    Weights holding NaN or inf are refused (:func:`~recycle_distill.checkpoint.finite.check_finite_on_load`)
    unless ``allow_non_finite`` or ``RECYCLE_DISTILL_ALLOW_NON_FINITE=1``.
    """
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        state_dict = load_file(path)
    except MemoryError:
        raise CheckpointError(f"{plain(path)}: refused to load: it asks for more memory than is available") from None
    except Exception as err:  # noqa: BLE001  (SafetensorError, OSError, ...: all mean unreadable)
        raise CheckpointError(f"{plain(path)}: truncated or corrupt safetensors file "
                              f"({plain(str(err), 200)})") from None
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{plain(path)}: a safetensors file without recycle-distill metadata; pass the architecture with -g "
            f"or convert the checkpoint with 'recycle-distill convert'"
        )
    version_text = metadata.get("format_version", "0")
    if not (isinstance(version_text, str) and version_text.isascii() and version_text.isdigit() and len(version_text) < 10):
        raise CheckpointError(
            f"{plain(path)}: damaged metadata: format_version must be a whole number, got {short_repr(version_text)}"
        )
    version = int(version_text)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{plain(path)}: format version {version} is newer than this library "
                              f"({FORMAT_VERSION}); upgrade")
    try:
        config = json.loads(metadata["config"])
        family = metadata["family"]
    except (KeyError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{plain(path)}: damaged metadata ({short_repr(err, 200)})") from None
    if not isinstance(config, dict) or not isinstance(family, str):
        raise CheckpointError(f"{plain(path)}: damaged metadata (the config is not a mapping)")
    check_finite_on_load(state_dict, path, allow_non_finite)
    return state_dict, family, config
