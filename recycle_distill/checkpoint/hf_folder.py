"""Read a student folder written by ``recycle-distill export --format hf`` back into our keys.

The folder's ``config.json`` carries a ``recycle_distill`` block (family, distiller
architecture, format version); a plain ``HubertModel`` folder's weights are translated with
:mod:`recycle_distill.checkpoint.hf_keys`, a remote-code folder's weights are already in our
keys. The writer is :func:`recycle_distill.hf_export.export_hf`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file

from recycle_distill.checkpoint.hf_keys import HEADS_FILE, from_hf_state_dict, load_hf_weights
from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.util.messages import short_repr

__all__ = ["HF_FORMAT_VERSION", "is_hf_export", "read_hf_student", "read_plain_export"]

HF_FORMAT_VERSION = 1


def read_plain_export(directory: str) -> dict[str, torch.Tensor]:
    """The HF weights and the projection heads of a plain export, in our keys (needs ``config.json``)."""
    from recycle_distill.students.config import StudentConfig

    with open(os.path.join(directory, "config.json"), encoding="utf-8") as handle:
        meta = json.load(handle)["recycle_distill"]
    config = StudentConfig.from_dict(meta["distiller"], source=directory)
    state = from_hf_state_dict(load_hf_weights(directory), config, directory)
    heads_path = os.path.join(directory, HEADS_FILE)
    if os.path.isfile(heads_path):
        state.update(load_file(heads_path))
    return state


def is_hf_export(path: str) -> bool:
    """True for a directory whose ``config.json`` has our ``recycle_distill`` block."""
    config_path = os.path.join(path, "config.json")
    if not (os.path.isdir(path) and os.path.isfile(config_path)):
        return False
    try:
        with open(config_path, encoding="utf-8") as handle:
            return isinstance(json.load(handle).get("recycle_distill"), dict)
    except (OSError, ValueError):
        return False


def read_hf_student(directory: str) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """(state dict in our keys, family, distiller config) of a folder written by :func:`export_hf`."""
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{directory}: a folder student needs a config.json (a Hugging Face export)")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except ValueError as err:
        raise CheckpointError(f"{config_path}: not valid JSON ({short_repr(err, 200)})") from None
    meta = config.get("recycle_distill") if isinstance(config, dict) else None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{directory}: a Hugging Face folder without recycle-distill metadata (config.json has no "
            f"'recycle_distill' block); only folders written by 'recycle-distill export --format hf' load as students"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > HF_FORMAT_VERSION:
        raise CheckpointError(f"{directory}: export format version {short_repr(version)} is not one this library "
                              f"reads (<= {HF_FORMAT_VERSION})")
    family, distiller = meta.get("family"), meta.get("distiller")
    if not isinstance(family, str) or not isinstance(distiller, dict):
        raise CheckpointError(f"{directory}: damaged recycle_distill metadata in config.json")
    if config.get("model_type") == "hubert":
        state = read_plain_export(directory)
    else:
        weights = os.path.join(directory, "model.safetensors")
        if not os.path.isfile(weights):
            raise CheckpointError(f"{directory}: no model.safetensors")
        state = load_file(weights)
    return state, family, distiller
