"""MaskHuBERT and STaRHuBERT as a plain transformers ``HubertModel`` (``model_type: hubert``).

Both students are HuBERT's own post-LN architecture at another size, so no custom code is
needed: this module says which configs ``HubertModel`` can express and writes its config. The
weights go through the key table of :mod:`recycle_distill.checkpoint.hf_keys` (read backwards).
Which families export this way: the rows of :mod:`recycle_distill.families` with
``hf_export="hubert"``.
"""

from __future__ import annotations

from typing import Any

from recycle_distill import families
from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.students.registry import student_class

__all__ = ["check_plain_exportable", "hubert_config"]


def check_plain_exportable(config: Any, family: str) -> None:
    """Raise when a student config uses something ``HubertModel`` cannot express."""
    problems = []
    plain = families.exported_as("hubert")
    if family not in plain:
        problems.append(f"family {family} (only {', '.join(plain)})")
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
    masked = student_class(family).has_mask_embedding  # MaskHuBERT has one, STaRHuBERT none
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
