"""MaskHuBERT and STaRHuBERT as a plain transformers ``HubertModel`` (``model_type: hubert``).

Both students are HuBERT's own post-LN architecture at another size, so no custom code is
needed. Keys are translated with the teachers' HF <-> fairseq table
(:data:`recycle_distill.training.teacher.hf_checkpoint.KEY_TABLE`) read backwards; our student keys
are S3PRL's HubertModel keys. transformers always has a feature projection; when the CNN
width equals the encoder width we have none, and the export writes the exact identity
(``x @ I + 0 == x`` in floating point), which the import checks and drops again.

The projection heads (MaskHuBERT's S3PRL ``hidden_states``) are not part of ``HubertModel``;
they go to ``projection_heads.safetensors`` beside it: head ``i`` is
``Linear(E, D)`` applied to ``outputs.hidden_states[i + 1]`` (see :func:`apply_projection_heads`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.training.teacher.hf_checkpoint import KEY_TABLE, _load_weights, convert_hf_state_dict

logger = logging.getLogger(__name__)

__all__ = ["PLAIN_FAMILIES", "HEADS_FILE", "hubert_config", "to_hf_state_dict", "from_hf_state_dict",
           "apply_projection_heads", "read_plain_export"]

PLAIN_FAMILIES = ("maskhubert", "starhubert")
HEADS_FILE = "projection_heads.safetensors"
HEAD_PREFIX = "proj_head."


def _reverse_rules(extractor_norm: str) -> list[tuple[re.Pattern, str]]:
    """(our-key regex, HF key template) for every :data:`KEY_TABLE` row, later rows first.

    A row ``(hf_regex, s3prl_template)`` is turned around: the template's ``{k}`` becomes the
    HF regex's k-th group, and each HF group becomes a ``{gk}`` slot. Two HF spellings of the
    weight-norm parameters map to one of ours; the later (``parametrizations``) one wins.
    """
    rules = []
    for hf_pattern, template in KEY_TABLE:
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


def check_plain_exportable(config: Any, family: str) -> None:
    """Raise when a student config uses something ``HubertModel`` cannot express."""
    problems = []
    if family not in PLAIN_FAMILIES:
        problems.append(f"family {family} (only {', '.join(PLAIN_FAMILIES)})")
    if config.required_seq_len_multiple != 1 or config.crop_seq_to_multiple != 1:
        problems.append("required_seq_len_multiple/crop_seq_to_multiple other than 1")
    if config.extractor_mode != "default":
        problems.append(f"extractor_mode={config.extractor_mode!r}")
    if problems:
        raise CheckpointError("cannot export as a plain transformers HubertModel: " + "; ".join(problems))


def hubert_config(config: Any, family: str) -> dict[str, Any]:
    """transformers ``HubertConfig`` fields for a MaskHuBERT / STaRHuBERT :class:`StudentConfig`."""
    check_plain_exportable(config, family)
    dims, kernels, strides = zip(*config.conv_feature_layers)
    masked = family == "maskhubert"
    return {
        "model_type": "hubert",
        "architectures": ["HubertModel"],
        "hidden_size": config.encoder_embed_dim,
        "num_hidden_layers": config.encoder_layers,
        "num_attention_heads": config.encoder_attention_heads,
        "intermediate_size": config.encoder_ffn_embed_dim,
        "hidden_act": "gelu",
        "hidden_dropout": config.dropout,
        "activation_dropout": config.activation_dropout,
        "attention_dropout": config.attention_dropout,
        "feat_proj_dropout": config.dropout_input,
        "feat_proj_layer_norm": True,
        "layerdrop": config.encoder_layerdrop,
        "layer_norm_eps": 1e-5,
        "feat_extract_norm": "group",
        "feat_extract_activation": "gelu",
        "conv_dim": list(dims),
        "conv_kernel": list(kernels),
        "conv_stride": list(strides),
        "conv_bias": config.conv_bias,
        "num_conv_pos_embeddings": config.conv_pos,
        "num_conv_pos_embedding_groups": config.conv_pos_groups,
        "conv_pos_batch_norm": False,
        "do_stable_layer_norm": False,
        # transformers builds masked_spec_embed only when a mask probability is > 0; STaRHuBERT
        # has no mask embedding, so it gets 0 (and no SpecAugment when fine-tuned).
        "apply_spec_augment": masked,
        "mask_time_prob": 0.05 if masked else 0.0,
        "mask_feature_prob": 0.0,
    }


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
        raise CheckpointError(f"{len(unknown)} student key(s) have no transformers HubertModel counterpart: {unknown[:8]}")
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
                    f"{source}: the feature projection is not the identity, which this student family "
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


def read_plain_export(directory: str) -> dict[str, Tensor]:
    """The HF weights and the projection heads of a plain export, in our keys (needs ``config.json``)."""
    from recycle_distill.students.config import StudentConfig

    with open(os.path.join(directory, "config.json"), encoding="utf-8") as handle:
        meta = json.load(handle)["recycle_distill"]
    config = StudentConfig.from_dict(meta["distiller"], source=directory)
    state = from_hf_state_dict(_load_weights(directory), config, directory)
    heads_path = os.path.join(directory, HEADS_FILE)
    if os.path.isfile(heads_path):
        from safetensors.torch import load_file

        state.update(load_file(heads_path))
    return state
