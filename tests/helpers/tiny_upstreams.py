"""Tiny random S3PRL upstreams of other model classes, written in each upstream's own checkpoint layout.

Each ``write_*`` builds S3PRL's own model class with a tiny config and random weights and
saves it as that upstream's loader expects; :func:`register_hub_entries` adds hub entries
for them to ``s3prl.hub`` (as a user's own hubconf would), so a teacher can name them as
``s3prl:<entry>``.
"""

from __future__ import annotations

import pathlib

import torch

DATA2VEC_CFG = {
    "_name": "data2vec_audio", "extractor_mode": "layer_norm", "encoder_layers": 3, "encoder_embed_dim": 48,
    "encoder_ffn_embed_dim": 96, "encoder_attention_heads": 4, "conv_feature_layers":
    "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2", "conv_pos": 16, "conv_pos_groups": 4,
    "layer_norm_first": False, "layer_type": "transformer", "final_dim": 0, "encoder_layerdrop": 0.05,
}
DISTILLER_CFG = {
    "extractor_mode": "default", "extractor_conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
    "encoder_layers": 2, "encoder_embed_dim": 40, "encoder_ffn_embed_dim": 80, "encoder_attention_heads": 4,
    "conv_pos": 16, "conv_pos_groups": 4, "final_dim": 40, "n_tasks": 3, "task_emb_type": "expand-last",
    "out_layer_type": "expand-last", "pred_layer_id": [1, 2, 3],
}
TERA_CFG = {
    "transformer": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64,
                    "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "share_layer": False,
                    "pre_layer_norm": False, "downsample_rate": 1, "input_dim": 40},
    "task": {"sequence_length": 0},
    "audio": {"target_level": -25, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": 40, "n_mfcc": 13,
              "input": {"channel": 0, "cmvn": True, "delta": 0, "feat_type": "mel", "log": True}},
}


def write_data2vec(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """S3PRL's converted data2vec layout (task_cfg, model_cfg, model_weight) around a tiny Data2VecAudioModel."""
    from s3prl.upstream.data2vec.data2vec_model import Data2VecAudioConfig, Data2VecAudioModel

    torch.manual_seed(seed)
    model = Data2VecAudioModel(Data2VecAudioConfig(**{k: v for k, v in DATA2VEC_CFG.items() if k != "_name"}))
    model.remove_pretraining_modules()
    weights = dict(model.state_dict())
    weights["_ema"] = torch.zeros(1)
    torch.save({"task_cfg": {"_name": "audio_pretraining", "normalize": True, "sample_rate": 16000},
                "model_cfg": DATA2VEC_CFG, "model_weight": weights}, path)
    return path


def write_distiller(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """S3PRL's DistilHuBERT layout (Config, Distiller) around a tiny DistillerModel."""
    from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

    torch.manual_seed(seed)
    model = DistillerModel(DistillerConfig(DISTILLER_CFG))
    torch.save({"Config": {"distiller": DISTILLER_CFG}, "Distiller": model.state_dict()}, path)
    return path


def write_tera(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """S3PRL's TERA/Mockingjay layout (Config, Transformer) around a tiny TransformerModel (10 ms frames)."""
    from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel

    torch.manual_seed(seed)
    model = TransformerModel(TransformerConfig(TERA_CFG["transformer"]), 40)
    torch.save({"Config": TERA_CFG, "Transformer": model.state_dict()}, path)
    return path


def register_hub_entries(folder: pathlib.Path, monkeypatch) -> dict[str, str]:
    """Write the three checkpoints and add ``tiny_data2vec``, ``tiny_distilhubert``, ``tiny_tera`` to s3prl.hub."""
    import s3prl.hub
    from s3prl.upstream.data2vec.expert import UpstreamExpert as Data2Vec
    from s3prl.upstream.distiller.expert import UpstreamExpert as Distiller
    from s3prl.upstream.mockingjay.expert import UpstreamExpert as Tera

    files = {"tiny_data2vec": write_data2vec(folder / "data2vec.pt"),
             "tiny_distilhubert": write_distiller(folder / "distiller.pt"),
             "tiny_tera": write_tera(folder / "tera.pt")}
    experts = {"tiny_data2vec": Data2Vec, "tiny_distilhubert": Distiller, "tiny_tera": Tera}
    for name, expert in experts.items():
        def entry(ckpt=None, model_config=None, _default=str(files[name]), _expert=expert, **kwargs):
            return _expert(ckpt or _default, **({"model_config": model_config} if model_config and _expert is Distiller else {}))
        monkeypatch.setattr(s3prl.hub, name, entry, raising=False)
    return {name: str(path) for name, path in files.items()}
