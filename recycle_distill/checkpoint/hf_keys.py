"""The Hugging Face <-> fairseq/S3PRL key table, and the conversions that read it both ways.

One table, :data:`HF_KEY_TABLE` (HF regex -> our template), serves the teacher (a transformers
HuBERT folder read into S3PRL's HubertModel keys) and the students' HF export (our keys written
as ``HubertModel`` keys, and read back). A key that no rule matches raises, so an unexpected
architecture never loads half its weights silently. transformers itself is not needed: weights
are read with safetensors or ``torch.load(weights_only=True)``.

transformers always has a feature projection; when the CNN width equals the encoder width a
student has none, and the export writes the exact identity (``x @ I + 0 == x`` in floating
point), which :func:`from_hf_state_dict` checks and drops again. The projection heads
(MaskHuBERT's S3PRL ``hidden_states``) are not part of ``HubertModel``; they go to
:data:`HEADS_FILE` beside it (see :func:`apply_projection_heads`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from recycle_distill.checkpoint.safe_load import CheckpointError, TeacherCheckpointError, safe_torch_load
from recycle_distill.util.messages import plain, short_repr

logger = logging.getLogger(__name__)

__all__ = ["HF_KEY_TABLE", "HEADS_FILE", "convert_hf_state_dict", "to_hf_state_dict", "from_hf_state_dict",
           "apply_projection_heads", "load_hf_weights"]

HEADS_FILE = "projection_heads.safetensors"
HEAD_PREFIX = "proj_head."

# (HF regex, S3PRL template). {i} = conv layer or encoder layer index. Both weight-norm
# spellings of the positional conv are listed: old ``weight_g/weight_v`` and the
# parametrization API's ``original0`` (= g) / ``original1`` (= v).
HF_KEY_TABLE: tuple[tuple[str, str], ...] = (
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


def convert_hf_state_dict(
    hf_state: Mapping[str, torch.Tensor], feat_extract_norm: str, source: str
) -> dict[str, torch.Tensor]:
    """Translate HF HuBERT keys to S3PRL HubertModel keys with :data:`HF_KEY_TABLE`.

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
            raise TeacherCheckpointError(f"{plain(source)}: two HF keys map to '{target}' (second: {plain(key, 200)})")
        else:
            converted[target] = tensor
    if unknown:
        raise TeacherCheckpointError(
            f"{plain(source)}: {len(unknown)} Hugging Face key(s) with no S3PRL HubertModel counterpart: "
            f"{short_repr(unknown[:10], 600)}"
        )
    if heads:
        logger.info("%s: dropping %d task-head tensors (%s)", source, len(heads), heads[:3])
    return converted


def _translate(name: str, feat_extract_norm: str) -> Optional[str]:
    for pattern, template in HF_KEY_TABLE:
        pattern, _, norm = pattern.partition("@")
        if norm and norm != feat_extract_norm:
            continue
        match = re.fullmatch(pattern, name)
        if match:
            return template.format(*match.groups())
    return None


def load_hf_weights(directory: str) -> dict[str, torch.Tensor]:
    """The weights of a transformers folder: one file, or the shards its index names (inside the folder)."""
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
                    raise TeacherCheckpointError(f"{plain(path)}: shard name {short_repr(shard, 200)} points outside "
                                                 f"the directory")
                state.update(_load_weight_file(os.path.join(directory, shard)))
            return state
    raise TeacherCheckpointError(f"{plain(directory)}: no {' / '.join(WEIGHT_FILES + INDEX_FILES)} in the directory")


def _load_weight_file(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    state = safe_torch_load(path)
    if not isinstance(state, Mapping):
        raise TeacherCheckpointError(f"{plain(path)}: expected a state dict, found {type(state).__name__}")
    return dict(state)


def _reverse_rules(extractor_norm: str) -> list[tuple[re.Pattern, str]]:
    """(our-key regex, HF key template) for every :data:`HF_KEY_TABLE` row, later rows first.

    A row ``(hf_regex, s3prl_template)`` is turned around: the template's ``{k}`` becomes the
    HF regex's k-th group, and each HF group becomes a ``{gk}`` slot. Two HF spellings of the
    weight-norm parameters map to one of ours; the later (``parametrizations``) one wins.
    """
    rules = []
    for hf_pattern, template in HF_KEY_TABLE:
        pattern, _, norm = hf_pattern.partition("@")
        if norm and norm != extractor_norm:
            continue
        groups = re.findall(r"\(([^()]*)\)", pattern)
        ours = re.escape(template)
        for index, group in enumerate(groups):
            ours = ours.replace(re.escape("{%d}" % index), f"(?P<g{index}>{group})")
        counter = iter(range(len(groups)))
        hf_template = re.sub(r"\(([^()]*)\)", lambda _m: "{g%d}" % next(counter), pattern).replace("\\.", ".")
        rules.append((re.compile(ours), hf_template))
    return rules[::-1]


def _to_hf_key(key: str, rules: list[tuple[re.Pattern, str]]) -> Optional[str]:
    for pattern, template in rules:
        match = pattern.fullmatch(key)
        if match:
            return template.format(**match.groupdict())
    return None


def to_hf_state_dict(state_dict: Mapping[str, Tensor], config: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Our student state dict -> (``HubertModel`` state dict, projection-head tensors).

    Raises:
        CheckpointError: a key that has no transformers counterpart.
    """
    rules = _reverse_rules("group")
    hf_state: dict[str, Tensor] = {}
    heads: dict[str, Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        if key.startswith(HEAD_PREFIX):
            heads[key] = tensor.detach().contiguous()
            continue
        target = _to_hf_key(key, rules)
        if target is None:
            unknown.append(key)
        else:
            hf_state[target] = tensor.detach().contiguous()
    if unknown:
        raise CheckpointError(f"{len(unknown)} student key(s) have no transformers HubertModel counterpart: "
                              f"{short_repr(unknown[:8], 600)}")
    cnn_dim = config.conv_feature_layers[-1][0]
    if "feature_projection.projection.weight" not in hf_state:
        hf_state["feature_projection.projection.weight"] = torch.eye(cnn_dim, config.encoder_embed_dim)
        hf_state["feature_projection.projection.bias"] = torch.zeros(config.encoder_embed_dim)
    return hf_state, heads


def from_hf_state_dict(hf_state: Mapping[str, Tensor], config: Any, source: str) -> dict[str, Tensor]:
    """A ``HubertModel`` state dict -> our student keys (heads not included).

    The identity feature projection an export writes for equal widths is checked and dropped.
    """
    state = convert_hf_state_dict(hf_state, "group", source)
    if config.conv_feature_layers[-1][0] == config.encoder_embed_dim:
        weight, bias = state.pop("post_extract_proj.weight", None), state.pop("post_extract_proj.bias", None)
        if weight is not None:
            identity = torch.eye(weight.shape[0], dtype=weight.dtype)
            if not (torch.equal(weight, identity) and bias is not None and not bool(bias.any())):
                raise CheckpointError(
                    f"{plain(source)}: the feature projection is not the identity, which this student family "
                    f"(equal CNN and encoder widths) cannot represent"
                )
    return state


def apply_projection_heads(heads: Mapping[str, Tensor], hidden_states: tuple[Tensor, ...]) -> list[Tensor]:
    """MaskHuBERT's S3PRL ``hidden_states`` from a ``HubertModel``'s ``hidden_states`` (N + 1 of them).

    Head i is ``F.linear(hidden_states[i + 1], W_i, b_i)`` (the identity when the file has no
    ``proj_head.{i}.lin_proj.weight``, i.e. when E == D).
    """
    outputs = []
    for index, state in enumerate(hidden_states[1:]):
        weight = heads.get(f"proj_head.{index}.lin_proj.weight")
        outputs.append(state if weight is None else torch.nn.functional.linear(
            state, weight, heads[f"proj_head.{index}.lin_proj.bias"]))
    return outputs
