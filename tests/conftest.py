"""Shared test helpers: paths to the reference data copied into tests/data, tiny checkpoints."""

from __future__ import annotations

import pathlib

import pytest
import torch
import yaml

from recycle_distill.compat import apply_compat

# Tests import s3prl directly, as users do after one of our entry points has run; on
# torchaudio >= 2.9 that needs the compat layer first (a no-op on the default stack).
apply_compat()

DATA = pathlib.Path(__file__).parent / "data"
FIXTURES = DATA / "fixtures"
KEYS = DATA / "keys"
CONF = DATA / "conf"

FAMILY_OF_FIXTURE = {"armhubert": "armhubert", "maskhubert": "maskhubert", "starhubert": "starhubert"}


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / name, weights_only=True)


def fixture_family(name: str) -> str:
    return next(family for family in FAMILY_OF_FIXTURE if f"tiny_{family}" in name)


def write_lightning_checkpoint(path: pathlib.Path, student_state: dict, extra: dict | None = None) -> pathlib.Path:
    """A checkpoint in the released Lightning layout (student_model.* keys, teacher, optimizer)."""
    state = {f"student_model.{k}": v for k, v in student_state.items()}
    state["teacher_model.model.encoder.layer_norm.weight"] = torch.ones(8)
    checkpoint = {"epoch": 3, "global_step": 100, "pytorch-lightning_version": "1.7.7", "state_dict": state}
    checkpoint.update(extra or {})
    torch.save(checkpoint, path)
    return path


def write_yaml(path: pathlib.Path, data: dict) -> pathlib.Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def tiny_arm_files(tmp_path):
    """(lightning ckpt, -g yaml, fixture dict) for the tiny ARMHuBERT fixture."""
    fixture = load_fixture("golden_tiny_armhubert.pt")
    ckpt = write_lightning_checkpoint(tmp_path / "tiny.ckpt", fixture["state_dict"])
    config = write_yaml(tmp_path / "tiny.yaml", {"distiller": fixture["config"]})
    return ckpt, config, fixture
