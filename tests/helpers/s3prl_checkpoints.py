"""Small checkpoints laid out as S3PRL's runner saves them (``states-<step>.ckpt``), for tests that
read experiments without training one: ``Args`` (an ``argparse.Namespace``), ``Config``, ``Step``,
``Epoch``, ``Optimizer``, ``Scheduler`` and the state dicts ``Featurizer``, ``Downstream`` (and
``Upstream`` when asked). The Downstream holds float weights, a BatchNorm (its
``num_batches_tracked`` counter), a long unit table ``unit_lm_ids`` and the float bookkeeping
buffer ``best_error``, as cif_asr's does."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

ARGS = {"mode": "train", "downstream": "cif_asr", "upstream": "armhubert", "upstream_ckpt": "tiny.ckpt",
        "upstream_model_config": "tiny.yaml", "upstream_feature_selection": "hidden_states",
        "upstream_layer_selection": None, "upstream_trainable": False, "expdir": "result/downstream/tiny",
        "seed": 1337, "device": "cpu"}
CONFIG = {"runner": {"total_steps": 30, "save_step": 10, "max_keep": 3},
          "optimizer": {"name": "TorchOptim", "torch_optim_name": "AdamW", "lr": 3.0e-4},
          "downstream_expert": {"corpus": {"name": "librispeech", "root": "/data"}, "lm": {"path": "/bert"},
                                "model": {"d_model": 8, "conformer_layers": 1}}}


def _downstream(width: int) -> nn.Module:
    model = nn.Module()
    model.encoder = nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width))
    model.register_buffer("unit_lm_ids", torch.tensor([0, 1, 2, 7, 9]))
    model.register_buffer("best_error", torch.tensor(0.5))
    return model


def s3prl_checkpoint(step: int, seed: int, width: int = 8, upstream: bool = False, args: Optional[dict] = None,
                     config: Optional[dict] = None) -> dict:
    """One checkpoint: weights drawn from ``seed``, BatchNorm counter ``step``, best_error ``1 / step``."""
    torch.manual_seed(seed)
    downstream = _downstream(width)
    downstream.encoder[1].running_mean.normal_()
    downstream.encoder[1].num_batches_tracked.fill_(step)
    downstream.best_error.fill_(1.0 / step)
    optimizer = torch.optim.AdamW(downstream.parameters(), lr=3.0e-4)
    state = {
        "Optimizer": optimizer.state_dict(),
        "Step": step,
        "Epoch": step // 10,
        "Args": argparse.Namespace(**{**ARGS, **(args or {})}),
        "Config": copy.deepcopy(config if config is not None else CONFIG),
        "Featurizer": {"weights": torch.randn(5)},
        "Downstream": downstream.state_dict(),
        "Scheduler": {"last_epoch": step, "base_lrs": [3.0e-4], "lr_lambdas": [None]},
    }
    if upstream:
        state["Upstream"] = {"model.layer.weight": torch.randn(3, 3)}
    return state


def write_s3prl_checkpoint(path: Path, step: int, seed: int, **kwargs: Any) -> Path:
    """:func:`s3prl_checkpoint` saved at ``path`` (its folder created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(s3prl_checkpoint(step, seed, **kwargs), path)
    return path


def write_experiment(folder: Path, steps: tuple[int, ...] = (10, 20, 30), **kwargs: Any) -> list[Path]:
    """``folder/states-<step>.ckpt`` for each step (seed = step), oldest first."""
    return [write_s3prl_checkpoint(Path(folder) / f"states-{step}.ckpt", step, step, **kwargs) for step in steps]
