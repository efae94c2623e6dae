"""Read a local Hugging Face ``transformers`` HuBERT directory into S3PRL's HubertModel layout.

Layout (e.g. ``facebook/hubert-base-ls960``): ``config.json`` (``model_type: hubert``) plus
``model.safetensors`` or ``pytorch_model.bin`` (or a sharded ``*.index.json``), optionally
``preprocessor_config.json``. transformers itself is not needed: the config is JSON and the
weights are read with safetensors or ``torch.load(weights_only=True)``.

Key names are translated with the explicit table :data:`KEY_TABLE` (HF pattern -> S3PRL
pattern); a key that no rule matches raises, so an unexpected architecture can never load
half its weights silently. Architecture options S3PRL's HubertModel cannot express (no
feature LayerNorm, batch-norm positional conv, other epsilons) raise as well.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Mapping, Optional, Union

import torch

from recycle_distill.checkpoint.safe_load import safe_torch_load
from recycle_distill.training.teacher.s3prl_models import TeacherCheckpointError, TeacherSpec

logger = logging.getLogger(__name__)

__all__ = ["KEY_TABLE", "read_hf_hubert_dir", "hf_config_to_s3prl", "convert_hf_state_dict", "is_hf_model_dir"]

PathLike = Union[str, os.PathLike]

# (HF regex, S3PRL template). {i} = conv layer or encoder layer index. Both weight-norm
# spellings of the positional conv are listed: old ``weight_g/weight_v`` and the
# parametrization API's ``original0`` (= g) / ``original1`` (= v).
KEY_TABLE: tuple[tuple[str, str], ...] = (
    (r"masked_spec_embed", "mask_emb"),
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", "feature_extractor.conv_layers.{0}.0.{1}"),
    # group-norm extractor (base): only layer 0 has a norm, at index 2 of S3PRL's block
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)@group", "feature_extractor.conv_layers.{0}.2.{1}"),
    # layer-norm extractor (large): LayerNorm sits inside S3PRL's (Transpose, LN, Transpose)
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)@layer", "feature_extractor.conv_layers.{0}.2.1.{1}"),
    (r"feature_projection\.layer_norm\.(weight|bias)", "layer_norm.{0}"),
    (r"feature_projection\.projection\.(weight|bias)", "post_extract_proj.{0}"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"encoder\.pos_conv_embed\.conv\.weight_g", "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.weight_v", "encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
    (r"encoder\.layer_norm\.(weight|bias)", "encoder.layer_norm.{0}"),
    (r"encoder\.layers\.(\d+)\.attention\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     "encoder.layers.{0}.self_attn.{1}.{2}"),
    (r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", "encoder.layers.{0}.self_attn_layer_norm.{1}"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)", "encoder.layers.{0}.fc1.{1}"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", "encoder.layers.{0}.fc2.{1}"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", "encoder.layers.{0}.final_layer_norm.{1}"),
)

# Task heads of HubertFor* classes: known, not part of the encoder, dropped with a log line.
HEAD_PREFIXES = ("lm_head.", "projector.", "classifier.")
# HubertFor* classes keep the encoder under this attribute.
ENCODER_PREFIX = "hubert."

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def is_hf_model_dir(path: PathLike) -> bool:
    """True for a directory holding a transformers ``config.json``."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def _require(config: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in config:
        raise TeacherCheckpointError(f"{source}: config.json lacks '{key}'")
    return config[key]


def hf_config_to_s3prl(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """S3PRL ``HubertConfig`` fields (fairseq names) for a transformers ``HubertConfig`` dict.

    Raises:
        TeacherCheckpointError: not a HuBERT config, or an option S3PRL's model cannot express.
    """
    model_type = config.get("model_type")
    if model_type != "hubert":
        raise TeacherCheckpointError(
            f"{source}: unknown teacher kind: config.json has model_type={model_type!r}; only 'hubert' "
            f"Hugging Face directories are supported (use the fairseq checkpoint for other models)"
        )
    unsupported = []
    if not config.get("feat_proj_layer_norm", True):
        unsupported.append("feat_proj_layer_norm=False (S3PRL's HuBERT always layer-norms the CNN output)")
    if config.get("conv_pos_batch_norm", False):
        unsupported.append("conv_pos_batch_norm=True")
    if config.get("feat_extract_activation", "gelu") != "gelu":
        unsupported.append(f"feat_extract_activation={config.get('feat_extract_activation')!r} (S3PRL: gelu)")
    if abs(float(config.get("layer_norm_eps", 1e-5)) - 1e-5) > 1e-12:
        unsupported.append(f"layer_norm_eps={config.get('layer_norm_eps')} (S3PRL: 1e-5)")
    norm = config.get("feat_extract_norm", "group")
    if norm not in ("group", "layer"):
        unsupported.append(f"feat_extract_norm={norm!r}")
    if unsupported:
        raise TeacherCheckpointError(f"{source}: not representable by S3PRL's HubertModel: " + "; ".join(unsupported))
    dims, kernels, strides = (list(_require(config, k, source)) for k in ("conv_dim", "conv_kernel", "conv_stride"))
    if not len(dims) == len(kernels) == len(strides):
        raise TeacherCheckpointError(f"{source}: conv_dim/conv_kernel/conv_stride lengths differ")
    return {
        "_name": "hubert",
        "label_rate": 50.0,
        "extractor_mode": "default" if norm == "group" else "layer_norm",
        "conv_feature_layers": repr([(int(d), int(k), int(s)) for d, k, s in zip(dims, kernels, strides)]),
        "conv_bias": bool(config.get("conv_bias", False)),
        "encoder_layers": int(_require(config, "num_hidden_layers", source)),
        "encoder_embed_dim": int(_require(config, "hidden_size", source)),
        "encoder_ffn_embed_dim": int(_require(config, "intermediate_size", source)),
        "encoder_attention_heads": int(_require(config, "num_attention_heads", source)),
        "activation_fn": str(config.get("hidden_act", "gelu")),
        "layer_norm_first": bool(config.get("do_stable_layer_norm", False)),
        "conv_pos": int(config.get("num_conv_pos_embeddings", 128)),
        "conv_pos_groups": int(config.get("num_conv_pos_embedding_groups", 16)),
        "dropout": float(config.get("hidden_dropout", 0.1)),
        "attention_dropout": float(config.get("attention_dropout", 0.1)),
        "activation_dropout": float(config.get("activation_dropout", 0.0)),
        "encoder_layerdrop": float(config.get("layerdrop", 0.0)),
        "dropout_input": float(config.get("feat_proj_dropout", 0.0)),
        "mask_prob": float(config.get("mask_time_prob", 0.05)),
        "mask_length": int(config.get("mask_time_length", 10)),
    }


def convert_hf_state_dict(
    hf_state: Mapping[str, torch.Tensor], feat_extract_norm: str, source: str
) -> dict[str, torch.Tensor]:
    """Translate HF HuBERT keys to S3PRL HubertModel keys with :data:`KEY_TABLE`.

    Raises:
        TeacherCheckpointError: a key no rule matches (all such keys are listed).
    """
    converted: dict[str, torch.Tensor] = {}
    unknown, heads = [], []
    strip = all(key.startswith(ENCODER_PREFIX) or key.startswith(HEAD_PREFIXES) for key in hf_state)
    for key, tensor in hf_state.items():
        if key.startswith(HEAD_PREFIXES):
            heads.append(key)
            continue
        name = key[len(ENCODER_PREFIX):] if strip and key.startswith(ENCODER_PREFIX) else key
        target = _translate(name, feat_extract_norm)
        if target is None:
            unknown.append(key)
        elif target in converted:
            raise TeacherCheckpointError(f"{source}: two HF keys map to '{target}' (second: {key})")
        else:
            converted[target] = tensor
    if unknown:
        raise TeacherCheckpointError(
            f"{source}: {len(unknown)} Hugging Face key(s) with no S3PRL HubertModel counterpart: {unknown[:10]}"
        )
    if heads:
        logger.info("%s: dropping %d task-head tensors (%s)", source, len(heads), heads[:3])
    return converted


def _translate(name: str, feat_extract_norm: str) -> Optional[str]:
    for pattern, template in KEY_TABLE:
        pattern, _, norm = pattern.partition("@")
        if norm and norm != feat_extract_norm:
            continue
        match = re.fullmatch(pattern, name)
        if match:
            return template.format(*match.groups())
    return None


def _load_weights(directory: str) -> dict[str, torch.Tensor]:
    for filename in WEIGHT_FILES:
        path = os.path.join(directory, filename)
        if os.path.isfile(path):
            return _load_weight_file(path)
    for filename in INDEX_FILES:
        path = os.path.join(directory, filename)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                weight_map = json.load(handle).get("weight_map", {})
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if os.path.basename(shard) != shard:
                    raise TeacherCheckpointError(f"{path}: shard name {shard!r} points outside the directory")
                state.update(_load_weight_file(os.path.join(directory, shard)))
            return state
    raise TeacherCheckpointError(f"{directory}: no {' / '.join(WEIGHT_FILES + INDEX_FILES)} in the directory")


def _load_weight_file(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    state = safe_torch_load(path)
    if not isinstance(state, Mapping):
        raise TeacherCheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return dict(state)


def read_hf_hubert_dir(directory: PathLike, normalize: Optional[bool] = None) -> TeacherSpec:
    """A :class:`TeacherSpec` for S3PRL's HubertModel from a local transformers directory.

    Args:
        directory: holds ``config.json`` and the weights.
        normalize: per-utterance wave normalisation; None reads ``do_normalize`` from
            ``preprocessor_config.json`` (False when that file is absent).
    """
    source = os.fspath(directory)
    with open(os.path.join(source, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    model_cfg = hf_config_to_s3prl(config, source)
    weights = convert_hf_state_dict(_load_weights(source), config.get("feat_extract_norm", "group"), source)
    if normalize is None:
        normalize = False
        preprocessor = os.path.join(source, "preprocessor_config.json")
        if os.path.isfile(preprocessor):
            with open(preprocessor, encoding="utf-8") as handle:
                normalize = bool(json.load(handle).get("do_normalize", False))
        logger.info("%s: wave normalisation %s (pass normalize= to override)", source, "on" if normalize else "off")
    return TeacherSpec("hubert", model_cfg, bool(normalize), weights, source, "huggingface",
                       {"normalize": bool(normalize), "sample_rate": 16000}, None)
