"""Tiny training setups shared by the trainer tests: corpus, teacher, configs, subprocess runs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Optional

import yaml

TEACHER = pathlib.Path(__file__).parents[1] / "data" / "teacher" / "tiny_hubert_fairseq.pt"

TINY_STUDENTS = {
    "armhubert": {"reuse_pattern": "[True, False] * 2", "layer_grad_scale": True},
    "maskhubert": {},
    "starhubert": {},
    "fithubert": {"enable_tr_layer": True, "tr_reduce_factor": 2, "tr_conv1d_kernel": 2,
                  "pred_layer_id": "[0, 1, 2, 3]", "encoder_ffn_embed_dim": 64},
}


def synthetic_train_corpus(folder: pathlib.Path, utterances_per_speaker: int) -> pathlib.Path:
    """A 2-speaker LibriSpeech folder (train-clean-100, dev-clean) of synthetic voices, no espeak-ng."""
    from recycle_distill.training.data.synth import make_tiny_librispeech

    root = folder / "LibriSpeech"
    make_tiny_librispeech(root, speakers=2, utterances_per_speaker=utterances_per_speaker,
                          subsets=("train-clean-100", "dev-clean"), use_espeak=False)
    return root


def tiny_distiller(family: str, **extra: Any) -> dict:
    distiller = {
        "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(64, 2, 2)] * 2",
        "encoder_layers": 4, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
        "encoder_attention_heads": 4, "pred_head_final_dim": 96, "conv_pos_groups": 4,
    }
    distiller.update(TINY_STUDENTS[family])
    distiller.update(extra)
    return distiller


def tiny_config(corpus: pathlib.Path, output: pathlib.Path, family: str = "armhubert",
                train: Optional[dict] = None, distiller: Optional[dict] = None, **sections: Any) -> dict:
    config = {
        "family": family,
        "teacher": {"teacher_model": str(TEACHER), "mask_prob": 0.5},
        "train": {"output_dir": str(output), "max_steps": 6, "batch_size": 4, "num_workers": 0,
                  "log_every_steps": 1, "distil_random_layer": 3, "seed": 7, **(train or {})},
        "optimizer": {"lr": 2.0e-3, "warmup_proportion": 0.1},
        "data": {"libri_root": str(corpus), "train_set": ["train-clean-100"], "test_set": ["dev-clean"]},
        "distiller": tiny_distiller(family, **(distiller or {})),
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def write_config(path: pathlib.Path, config: dict) -> pathlib.Path:
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(args: list[str], env: Optional[dict] = None, timeout: int = 600,
            launcher: Optional[list[str]] = None) -> subprocess.CompletedProcess:
    """``python -m recycle_distill train ARGS`` (or ``LAUNCHER ARGS``, e.g. torchrun ending in ``train``)."""
    command = (launcher or [sys.executable, "-m", "recycle_distill", "train"]) + args
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def metrics(output: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
