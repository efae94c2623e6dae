"""Read a local Hugging Face ``transformers`` HuBERT directory into S3PRL's HubertModel layout.

Layout (e.g. ``facebook/hubert-base-ls960``): ``config.json`` (``model_type: hubert``) plus
``model.safetensors`` or ``pytorch_model.bin`` (or a sharded ``*.index.json``), optionally
``preprocessor_config.json``. transformers itself is not needed: the config is JSON and the
weights are read with safetensors or ``torch.load(weights_only=True)``.

Key names are translated with the explicit table :data:`recycle_distill.checkpoint.hf_keys.HF_KEY_TABLE` (HF pattern -> S3PRL
pattern); a key that no rule matches raises, so an unexpected architecture can never load
half its weights silently. Architecture options S3PRL's HubertModel cannot express (no
feature LayerNorm, batch-norm positional conv, other epsilons) raise as well.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Mapping, Optional, Union

from recycle_distill.checkpoint.hf_keys import convert_hf_state_dict, load_hf_weights
from recycle_distill.training.teacher.s3prl_models import TeacherCheckpointError, TeacherSpec
from recycle_distill.util.messages import short_repr

logger = logging.getLogger(__name__)

__all__ = ["read_hf_hubert_dir", "hf_config_to_s3prl", "is_hf_model_dir"]

PathLike = Union[str, os.PathLike]


def is_hf_model_dir(path: PathLike) -> bool:
    """True for a directory holding a transformers ``config.json``."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def _require(config: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in config:
        raise TeacherCheckpointError(f"{source}: config.json lacks '{key}'")
    return config[key]


def _whole(value: Any, key: str, source: str) -> int:
    """A whole number from config.json (an integral float is accepted); one line naming the key otherwise."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TeacherCheckpointError(f"{source}: config.json: '{key}' must be a whole number, got {short_repr(value)}")
    return value


def _real(value: Any, key: str, source: str) -> float:
    """A finite number from config.json; one line naming the key otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TeacherCheckpointError(f"{source}: config.json: '{key}' must be a finite number, got {short_repr(value)}")
    return float(value)


def _whole_list(config: Mapping[str, Any], key: str, source: str) -> list[int]:
    value = _require(config, key, source)
    if not isinstance(value, (list, tuple)):
        raise TeacherCheckpointError(f"{source}: config.json: '{key}' must be a list of whole numbers, "
                                     f"got {short_repr(value)}")
    return [_whole(item, key, source) for item in value]


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
    if abs(_real(config.get("layer_norm_eps", 1e-5), "layer_norm_eps", source) - 1e-5) > 1e-12:
        unsupported.append(f"layer_norm_eps={config.get('layer_norm_eps')} (S3PRL: 1e-5)")
    norm = config.get("feat_extract_norm", "group")
    if norm not in ("group", "layer"):
        unsupported.append(f"feat_extract_norm={norm!r}")
    if unsupported:
        raise TeacherCheckpointError(f"{source}: not representable by S3PRL's HubertModel: " + "; ".join(unsupported))
    dims, kernels, strides = (_whole_list(config, k, source) for k in ("conv_dim", "conv_kernel", "conv_stride"))
    if not len(dims) == len(kernels) == len(strides):
        raise TeacherCheckpointError(f"{source}: conv_dim/conv_kernel/conv_stride lengths differ")
    return {
        "_name": "hubert",
        "label_rate": 50.0,
        "extractor_mode": "default" if norm == "group" else "layer_norm",
        "conv_feature_layers": repr([(int(d), int(k), int(s)) for d, k, s in zip(dims, kernels, strides)]),
        "conv_bias": bool(config.get("conv_bias", False)),
        "encoder_layers": _whole(_require(config, "num_hidden_layers", source), "num_hidden_layers", source),
        "encoder_embed_dim": _whole(_require(config, "hidden_size", source), "hidden_size", source),
        "encoder_ffn_embed_dim": _whole(_require(config, "intermediate_size", source), "intermediate_size", source),
        "encoder_attention_heads": _whole(_require(config, "num_attention_heads", source), "num_attention_heads",
                                          source),
        "activation_fn": str(config.get("hidden_act", "gelu")),
        "layer_norm_first": bool(config.get("do_stable_layer_norm", False)),
        "conv_pos": _whole(config.get("num_conv_pos_embeddings", 128), "num_conv_pos_embeddings", source),
        "conv_pos_groups": _whole(config.get("num_conv_pos_embedding_groups", 16), "num_conv_pos_embedding_groups",
                                  source),
        "dropout": _real(config.get("hidden_dropout", 0.1), "hidden_dropout", source),
        "attention_dropout": _real(config.get("attention_dropout", 0.1), "attention_dropout", source),
        "activation_dropout": _real(config.get("activation_dropout", 0.0), "activation_dropout", source),
        "encoder_layerdrop": _real(config.get("layerdrop", 0.0), "layerdrop", source),
        "dropout_input": _real(config.get("feat_proj_dropout", 0.0), "feat_proj_dropout", source),
        "mask_prob": _real(config.get("mask_time_prob", 0.05), "mask_time_prob", source),
        "mask_length": _whole(config.get("mask_time_length", 10), "mask_time_length", source),
    }


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
    weights = convert_hf_state_dict(load_hf_weights(source), config.get("feat_extract_norm", "group"), source)
    if normalize is None:
        normalize = False
        preprocessor = os.path.join(source, "preprocessor_config.json")
        if os.path.isfile(preprocessor):
            with open(preprocessor, encoding="utf-8") as handle:
                normalize = bool(json.load(handle).get("do_normalize", False))
        logger.info("%s: wave normalisation %s (pass normalize= to override)", source, "on" if normalize else "off")
    return TeacherSpec("hubert", model_cfg, bool(normalize), weights, source, "huggingface",
                       {"normalize": bool(normalize), "sample_rate": 16000}, None)
