"""A random-weight HuBERT written in fairseq's own checkpoint layout (demo and tests).

The file has fairseq's top-level keys (``args``, ``cfg`` with ``model``/``task`` sections,
``model``, ``criterion``, ``optimizer_history``, ``task_state``, ``extra_state``,
``last_optimizer_state``) and the pretraining tensors (``label_embs_concat``, ``final_proj``), so
the teacher loader reads it exactly as it reads ``hubert_base_ls960.pt``. The label dictionary
is stored as plain data (fairseq's ``Dictionary`` class cannot be pickled without fairseq).
"""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

import torch

__all__ = ["save_random_hubert", "HUBERT_BASE_SHAPE", "HUBERT_BASE_CFG", "HUBERT_BASE_NUM_LABELS"]

# fairseq ``cfg.model`` of hubert_base_ls960.pt (fields S3PRL's HubertConfig reads).
# required_seq_len_multiple is 1, as the teacher runs in the reference distillation code.
HUBERT_BASE_CFG: dict[str, Any] = {
    "label_rate": 50.0,
    "extractor_mode": "default",
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2",
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "final_dim": 256,
    "untie_final_proj": True,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05,
    "dropout_input": 0.1,
    "dropout_features": 0.1,
    "feature_grad_mult": 0.1,
    "required_seq_len_multiple": 1,
}
HUBERT_BASE_NUM_LABELS = 504  # 500 k-means units + 4 fairseq specials
# Its shape alone (fairseq hubert_base_librispeech.yaml), for random teachers of that size.
HUBERT_BASE_SHAPE = {key: HUBERT_BASE_CFG[key] for key in (
    "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
    "conv_feature_layers", "final_dim")}


def save_random_hubert(
    path: Union[str, os.PathLike],
    *,
    encoder_layers: int = 4,
    encoder_embed_dim: int = 96,
    encoder_ffn_embed_dim: int = 192,
    encoder_attention_heads: int = 4,
    conv_feature_layers: Union[str, Sequence[tuple[int, int, int]]] = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
    final_dim: int = 32,
    num_labels: int = 20,
    seed: int = 0,
) -> str:
    """Build S3PRL's ``HubertModel`` with random weights and save it as fairseq would.

    Returns:
        the path written.
    """
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    from recycle_distill.util.literal import parse_literal

    layers = parse_literal(conv_feature_layers, "conv_feature_layers") if isinstance(conv_feature_layers, str) else conv_feature_layers
    model_cfg: dict[str, Any] = {
        "_name": "hubert", "label_rate": 50.0, "extractor_mode": "default", "encoder_layers": encoder_layers,
        "encoder_embed_dim": encoder_embed_dim, "encoder_ffn_embed_dim": encoder_ffn_embed_dim,
        "encoder_attention_heads": encoder_attention_heads, "activation_fn": "gelu", "layer_type": "transformer",
        "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "encoder_layerdrop": 0.05,
        "dropout_input": 0.1, "dropout_features": 0.1, "final_dim": final_dim, "untie_final_proj": True,
        "layer_norm_first": False, "conv_feature_layers": repr([tuple(layer) for layer in layers]),
        "conv_bias": False, "logit_temp": 0.1, "target_glu": False, "feature_grad_mult": 0.1,
        "mask_length": 10, "mask_prob": 0.8, "mask_selection": "static", "mask_other": 0.0,
        "no_mask_overlap": False, "mask_min_space": 1, "mask_channel_length": 10, "mask_channel_prob": 0.0,
        "mask_channel_selection": "static", "mask_channel_other": 0.0, "no_mask_channel_overlap": False,
        "mask_channel_min_space": 1, "conv_pos": 128, "conv_pos_groups": 16, "latent_temp": [2.0, 0.5, 0.999995],
        "skip_masked": False, "skip_nomask": False, "checkpoint_activations": False, "required_seq_len_multiple": 2,
        "depthwise_conv_kernel_size": 31, "attn_type": "", "pos_enc_type": "abs", "fp16": False,
    }
    task_cfg = {"_name": "hubert_pretraining", "data": "", "labels": ["km"], "label_rate": 50.0,
                "sample_rate": 16000, "normalize": False, "enable_padding": False, "max_sample_size": 250000,
                "min_sample_size": 32000, "random_crop": True, "pad_audio": False}
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(num_labels)]
    torch.manual_seed(seed)
    names = {f for f in HubertConfig.__dataclass_fields__}
    task_names = {f for f in HubertPretrainingConfig.__dataclass_fields__}
    model = HubertModel(
        HubertConfig(**{k: v for k, v in model_cfg.items() if k in names}),
        HubertPretrainingConfig(**{k: v for k, v in task_cfg.items() if k in task_names}),
        [symbols],  # only len() is used: the number of label classes
    )
    checkpoint = {
        "args": None,
        "cfg": {"_name": None, "common": {"seed": seed, "cpu": True, "fp16": False}, "model": model_cfg, "task": task_cfg},
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {"dictionary_symbols": [symbols]},
        "extra_state": {"train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0, "shuffle": True}},
        "last_optimizer_state": {"state": {}, "param_groups": []},
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    torch.save(checkpoint, path)
    return os.fspath(path)
