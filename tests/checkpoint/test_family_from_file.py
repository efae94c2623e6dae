"""``load_student`` takes the family from a file that names it (a compact ``.safetensors``, a
Hugging Face folder), and says what to pass for one that does not."""

from __future__ import annotations

import pytest
import torch

from recycle_distill.checkpoint import CheckpointError, load_student, save_compact
from recycle_distill.students import FAMILIES

from conftest import load_fixture, write_lightning_checkpoint


@pytest.mark.parametrize("family", ["armhubert", "maskhubert"])
def test_a_compact_file_loads_without_a_family(tmp_path, family):
    fixture = load_fixture(f"golden_tiny_{family}.pt")
    path = tmp_path / "student.safetensors"
    save_compact(str(path), fixture["state_dict"], family, fixture["config"])
    model = load_student(path)
    assert model.family == family
    for key, value in fixture["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value)


def test_a_file_without_a_family_asks_for_one(tmp_path):
    fixture = load_fixture("golden_tiny_armhubert.pt")
    ckpt = write_lightning_checkpoint(tmp_path / "released.ckpt", fixture["state_dict"])
    with pytest.raises(CheckpointError) as err:
        load_student(ckpt)
    assert str(err.value) == (f"{ckpt}: the file does not name its student family; pass one of "
                              f"{', '.join(FAMILIES)} (family=..., --family)")


def test_an_unknown_family_is_refused_before_the_file_is_read(tmp_path):
    with pytest.raises(CheckpointError, match="^unknown student family 'bert'; known: armhubert"):
        load_student(tmp_path / "absent.ckpt", "bert")
