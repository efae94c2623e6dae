"""Trainer state in-process: RNG capture/restore, checkpoint pruning and best.pt, precision fallback, epochs.

The end-to-end resume and DDP tests (``test_train.py``, slow) run whole subprocesses; these
pin the pieces they depend on in a few seconds each.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import pytest
import torch

from recycle_distill.training import load_train_config
from recycle_distill.training.state import (
    capture_rng,
    latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    restore_rng,
    save_training_state,
)
from recycle_distill.training.objectives import sample_hint_layers

from helpers.train_helpers import synthetic_train_corpus, tiny_config


def _draws() -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
            np.random.randn(1).tolist(), random.gauss(0, 1))


def test_rng_state_round_trips_torch_numpy_and_python(tmp_path):
    """Captured, saved with weights_only, advanced, restored: every generator draws the same again."""
    torch.manual_seed(5)
    np.random.seed(6)
    random.seed(7)
    np.random.randn(1)  # numpy keeps a cached gaussian: make sure it is in the state
    random.gauss(0, 1)
    path = save_training_state(str(tmp_path), 1, {"rng": capture_rng()})
    expected = _draws()
    _draws()  # advance all three
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    restore_rng(load_training_state(path)["rng"])
    assert _draws() == expected


@pytest.mark.parametrize("generator", ["torch", "numpy", "python"])
def test_each_generator_is_restored_on_its_own(generator):
    """Restoring must not leave any one generator where it was (a missed one still passes a joint test)."""
    state = capture_rng()
    expected = _draws()
    reseed = {"torch": lambda: torch.manual_seed(11), "numpy": lambda: np.random.seed(11),
              "python": lambda: random.seed(11)}
    reseed[generator]()
    restore_rng(state)
    assert _draws() == expected


def _touch_steps(folder, steps):
    for step in steps:
        save_training_state(str(folder), step, {"marker": step})


def test_prune_keeps_the_newest_and_best(tmp_path):
    _touch_steps(tmp_path, [1, 2, 3, 10, 20])
    save_training_state(str(tmp_path), 2, {"marker": "best"}, name="best.pt")
    prune_checkpoints(str(tmp_path), keep_last=2)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "step-00000010.pt", "step-00000020.pt"]
    assert latest_checkpoint(str(tmp_path)).endswith("step-00000020.pt")
    assert load_training_state(str(tmp_path / "best.pt"))["marker"] == "best"
    prune_checkpoints(str(tmp_path), keep_last=5)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "step-00000010.pt", "step-00000020.pt"]


def test_step_files_are_ordered_by_number_not_name(tmp_path):
    (tmp_path / "step-9.pt").write_bytes(b"")
    (tmp_path / "step-00000010.pt").write_bytes(b"")
    (tmp_path / "step-x.pt").write_bytes(b"")
    assert latest_checkpoint(str(tmp_path)).endswith("step-00000010.pt")
    prune_checkpoints(str(tmp_path), keep_last=1)
    assert sorted(os.listdir(tmp_path)) == ["step-00000010.pt", "step-x.pt"]


def test_load_refuses_what_is_not_a_training_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a recycle-distill training checkpoint"):
        load_training_state(str(tmp_path / "other.pt"))


# ------------------------------------------------------------------ the Trainer in-process
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    return synthetic_train_corpus(tmp_path_factory.mktemp("corpus"), utterances_per_speaker=2)


def _trainer(corpus, output, **train):
    from recycle_distill.training.trainer import Trainer

    config = tiny_config(corpus, output, train={"batch_size": 2, "max_audio_seconds": 0.5, "num_workers": 0, **train})
    return Trainer(load_train_config(config))


def test_trainer_prunes_to_keep_last_and_writes_best(tmp_path, tiny_corpus, monkeypatch):
    trainer = _trainer(tiny_corpus, tmp_path / "run", max_steps=4, save_every_steps=1, val_every_steps=2, keep_last=2)
    epochs = []
    set_epoch = trainer.objective.set_epoch
    monkeypatch.setattr(trainer.objective, "set_epoch", lambda epoch: (epochs.append(epoch), set_epoch(epoch)))
    summary = trainer.fit()
    assert summary["steps"] == 4
    names = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    assert names == ["best.pt", "step-00000003.pt", "step-00000004.pt"]
    best = load_training_state(str(tmp_path / "run" / "checkpoints" / "best.pt"))
    assert best["step"] in (2, 4) and best["best_valid"] == pytest.approx(summary["best_valid"])
    # 4 training utterances, batch 2: two steps per epoch; each epoch draws its hint layers.
    assert epochs == [0, 1]
    assert trainer.objective.hint_layers == sample_hint_layers(4, 3, 7, 1)
    assert (tmp_path / "run" / "student.safetensors").is_file()


def test_fp16_on_cpu_warns_and_trains_in_fp32(tmp_path, tiny_corpus, caplog):
    with caplog.at_level(logging.WARNING, logger="recycle_distill.training.trainer"):
        trainer = _trainer(tiny_corpus, tmp_path / "run", max_steps=1, precision="fp16", device="cpu")
    assert trainer.precision == "fp32"
    assert not trainer.scaler.is_enabled()
    assert "precision fp16 needs CUDA; training in fp32 on cpu" in caplog.text


def test_checkpoint_format_tag_is_stable(tmp_path):
    """Resuming accepts files written by earlier versions: the on-disk tag is part of the format."""
    path = save_training_state(str(tmp_path), 3, {"marker": 1})
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"], raw["step"], raw["marker"]) == ("recycle-distill-train", 1, 3, 1)
    assert path.endswith("step-00000003.pt")


def test_cuda_rng_states_are_captured_and_restored_when_cuda_is_there(monkeypatch):
    """The CUDA branch, with CUDA's RNG calls stood in for (runs on CPU-only machines too)."""
    cuda_states = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = capture_rng()
    assert state["cuda"] is cuda_states
    restore_rng(state)
    assert restored == [cuda_states]
    del state["cuda"]  # a checkpoint written on a CPU-only machine
    restore_rng(state)
    assert restored == [cuda_states]


def test_latest_checkpoint_of_an_empty_folder_is_none_and_otherwise_the_highest_step(tmp_path):
    assert latest_checkpoint(str(tmp_path)) is None
    _touch_steps(tmp_path, [5, 30, 200])
    assert latest_checkpoint(str(tmp_path)).endswith("step-00000200.pt")
