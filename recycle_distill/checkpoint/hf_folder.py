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

from recycle_distill.checkpoint.finite import check_finite_on_load
from recycle_distill.checkpoint.hf_keys import HEADS_FILE, WEIGHT_FILES, from_hf_state_dict, load_hf_weights
from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.util.messages import plain, short_repr

__all__ = ["HF_FORMAT_VERSION", "is_hf_export", "read_hf_student", "read_plain_export"]

HF_FORMAT_VERSION = 1


def read_plain_export(directory: str, *, allow_non_finite: bool = False) -> dict[str, torch.Tensor]:
    """The HF weights and the projection heads of a plain export, in our keys (needs ``config.json``).

    Weights holding NaN or inf are refused, naming the file (see :func:`check_finite_on_load`).
    """
    from recycle_distill.students.config import StudentConfig

    with open(os.path.join(directory, "config.json"), encoding="utf-8") as handle:
        meta = json.load(handle)["recycle_distill"]
    config = StudentConfig.from_dict(meta["distiller"], source=directory)
    state = from_hf_state_dict(load_hf_weights(directory), config, directory)
    check_finite_on_load(state, _weights_file(directory), allow_non_finite)
    heads_path = os.path.join(directory, HEADS_FILE)
    if os.path.isfile(heads_path):
        heads = load_file(heads_path)
        check_finite_on_load(heads, heads_path, allow_non_finite)
        state.update(heads)
    return state


def _weights_file(directory: str) -> str:
    """The weight file a folder's message names: the one file, or the folder for sharded weights."""
    single = [os.path.join(directory, name) for name in WEIGHT_FILES if os.path.isfile(os.path.join(directory, name))]
    return single[0] if single else directory


def is_hf_export(path: str) -> bool:
    """True for a directory whose ``config.json`` has our ``recycle_distill`` block."""
    config_path = os.path.join(path, "config.json")
    if not (os.path.isdir(path) and os.path.isfile(config_path)):
        return False
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("recycle_distill"), dict)  # JSON may be a list


# transformers HubertConfig key -> our distiller key (what a plain export writes, equal values).
HF_SIZE_KEYS = {"hidden_size": "encoder_embed_dim", "num_hidden_layers": "encoder_layers",
                "num_attention_heads": "encoder_attention_heads", "intermediate_size": "encoder_ffn_embed_dim",
                "num_conv_pos_embeddings": "conv_pos", "num_conv_pos_embedding_groups": "conv_pos_groups"}
HF_CONV_KEYS = ("conv_dim", "conv_kernel", "conv_stride")  # the columns of conv_feature_layers


def _check_sizes(config: dict[str, Any], distiller: dict[str, Any], config_path: str) -> None:
    """The ``recycle_distill`` block is a valid student config (every size bounded), and the keys
    transformers builds from say the same: one line naming ``config.json`` and the key otherwise."""
    from recycle_distill.students.config import ConfigError, StudentConfig

    shown = plain(config_path)
    try:
        student = StudentConfig.from_dict(distiller, source=shown)
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    ours = student.to_dict()
    changed = "config.json was changed after the export"
    if config.get("model_type") == "hubert":
        for hf_key, key in HF_SIZE_KEYS.items():
            if hf_key in config and not _same(config[hf_key], ours[key]):
                raise CheckpointError(f"{shown}: key '{hf_key}' is {short_repr(config[hf_key])}, but the "
                                      f"recycle_distill block says {key} {ours[key]}; {changed}")
        for column, hf_key in enumerate(HF_CONV_KEYS):
            wanted = [spec[column] for spec in student.conv_feature_layers]
            value = config.get(hf_key, wanted)
            if not (isinstance(value, list) and len(value) == len(wanted) and all(map(_same, value, wanted))):
                what = f"conv_feature_layers {hf_key[len('conv_'):]}s"
                raise CheckpointError(f"{shown}: key '{hf_key}' is {short_repr(value)}, but the recycle_distill "
                                      f"block says {what} {wanted}; {changed}")
    elif "distiller" in config and config["distiller"] != distiller:
        raise CheckpointError(f"{shown}: key 'distiller' differs from the recycle_distill block's distiller; "
                              f"{changed}")


def _same(value: Any, wanted: int) -> bool:
    """``value`` is the whole number ``wanted`` (a bool or a string is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value == wanted


def read_hf_student(
    directory: str, *, allow_non_finite: bool = False
) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """(state dict in our keys, family, distiller config) of a folder written by :func:`export_hf`.

    Weights holding NaN or inf are refused unless ``allow_non_finite`` (see :func:`check_finite_on_load`).
    """
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{plain(directory)}: a folder student needs a config.json (a Hugging Face export)")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except ValueError as err:
        raise CheckpointError(f"{plain(config_path)}: not valid JSON ({short_repr(err, 200)})") from None
    meta = config.get("recycle_distill") if isinstance(config, dict) else None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{plain(directory)}: a Hugging Face folder without recycle-distill metadata (config.json has no "
            f"'recycle_distill' block); only folders written by 'recycle-distill export --format hf' load as students"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > HF_FORMAT_VERSION:
        raise CheckpointError(f"{plain(directory)}: export format version {short_repr(version)} is not one this library "
                              f"reads (<= {HF_FORMAT_VERSION})")
    family, distiller = meta.get("family"), meta.get("distiller")
    if not isinstance(family, str) or not isinstance(distiller, dict):
        raise CheckpointError(f"{plain(directory)}: damaged recycle_distill metadata in config.json")
    _check_sizes(config, distiller, config_path)
    if config.get("model_type") == "hubert":
        state = read_plain_export(directory, allow_non_finite=allow_non_finite)
    else:
        weights = os.path.join(directory, "model.safetensors")
        if not os.path.isfile(weights):
            raise CheckpointError(f"{plain(directory)}: no model.safetensors")
        state = load_file(weights)
        check_finite_on_load(state, weights, allow_non_finite)
    return state, family, distiller
