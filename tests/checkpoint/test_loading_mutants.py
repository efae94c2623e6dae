"""Checkpoint loading (``checkpoint/loading.py``) beyond ``test_checkpoint.py``: the exact
one-line refusal of each malformed file (each names the file), what a plain state dict keeps,
the non-finite default, and the messages of ``load_student`` before any weights are built.

Written for the survivors of mutation testing (docs/development.md, Mutation testing).
"""

from __future__ import annotations

import logging

import pytest
import torch

from recycle_distill.checkpoint.compact import save_compact
from recycle_distill.checkpoint.loading import load_student, read_student_state_dict
from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.students.build import build_student


def _saved(tmp_path, obj, name="w.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("obj, problem", [
    ([1, 2], "expected a dict checkpoint, got list"),
    ({"state_dict": 5}, "'state_dict' is not a mapping"),
    ({"state_dict": {"teacher_model.w": torch.ones(1)}}, "a Lightning checkpoint without 'student_model.*' keys"),
    ({"step": 3}, "no tensors found"),
])
def test_a_malformed_file_is_refused_naming_it(tmp_path, obj, problem):
    path = _saved(tmp_path, obj)
    with pytest.raises(CheckpointError) as caught:
        read_student_state_dict(path)
    assert str(caught.value) == f"{path}: {problem}"


def test_a_plain_state_dict_keeps_its_tensors_only(tmp_path):
    state, family, config = read_student_state_dict(_saved(tmp_path, {"w": torch.ones(2), "step": 3}))
    assert list(state) == ["w"] and torch.equal(state["w"], torch.ones(2)) and family is None and config is None


def test_a_lightning_checkpoint_keeps_its_student_without_the_prefix(tmp_path):
    path = _saved(tmp_path, {"state_dict": {"student_model.w": torch.ones(1), "teacher_model.w": torch.zeros(1)}})
    assert list(read_student_state_dict(path)[0]) == ["w"]


def test_non_finite_weights_are_refused_by_default_and_loaded_when_allowed(tmp_path):
    path = _saved(tmp_path, {"w": torch.tensor([1.0, float("nan")])})
    with pytest.raises(CheckpointError, match="hold NaN or infinite values"):
        read_student_state_dict(path)
    assert torch.isnan(read_student_state_dict(path, allow_non_finite=True)[0]["w"][1])


def test_an_unknown_family_lists_the_known_ones(tmp_path):
    with pytest.raises(CheckpointError) as caught:
        load_student(_saved(tmp_path, {"w": torch.ones(1)}), "nope")
    assert str(caught.value) == "unknown student family 'nope'; known: armhubert, maskhubert, starhubert, fithubert"


def test_weights_matching_no_preset_ask_for_the_architecture(tmp_path):
    path = _saved(tmp_path, {"w": torch.ones(1)})
    with pytest.raises(CheckpointError) as caught:
        load_student(path, "armhubert")
    assert str(caught.value) == (f"{path}: no model config given and the weights match no armhubert preset; pass the "
                                 "architecture YAML (-g / model_config)")


def test_a_layout_mismatch_names_the_file_and_lists_one_problem_a_line(tmp_path):
    path = _saved(tmp_path, {"w": torch.ones(1)})
    with pytest.raises(CheckpointError) as caught:
        load_student(path, "armhubert", model_config="armhubert")
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: checkpoint does not match the armhubert config"
    assert len(lines) > 1 and all(line.startswith("  ") for line in lines[1:])


def test_a_bool_check_names_the_option_exactly(tmp_path):
    with pytest.raises(ValueError) as caught:
        load_student(_saved(tmp_path, {"w": torch.ones(1)}), "armhubert", allow_non_finite="no")
    assert str(caught.value) == "allow_non_finite: expected True or False, got 'no' (str)"


def test_weights_matching_a_later_preset_are_found_and_logged(tmp_path, caplog):
    # The presets before "fithubert" belong to other families: the search passes them by.
    state = build_student("fithubert").state_dict()
    path = _saved(tmp_path, state)
    with caplog.at_level(logging.INFO, logger="recycle_distill.checkpoint.loading"):
        model = load_student(path, "fithubert")
    assert model.family == "fithubert"
    assert f"{path}: no model config given; its weights match preset 'fithubert'" in caplog.messages
    torch.testing.assert_close(model.state_dict(), state)


def test_overrides_reach_the_config_of_a_given_architecture(tmp_path):
    path = _saved(tmp_path, build_student("fithubert").state_dict())
    assert build_student("fithubert").config.reference_batched_reuse is False
    model = load_student(path, "fithubert", model_config="fithubert", reference_batched_reuse=True)
    assert model.config.reference_batched_reuse is True


@pytest.fixture(scope="module")
def fithubert_compact(tmp_path_factory):
    """A compact FitHuBERT file (it names its family and stores its config)."""
    model = build_student("fithubert")
    path = tmp_path_factory.mktemp("compact") / "fit.safetensors"
    save_compact(str(path), model.state_dict(), "fithubert", model.config.to_dict())
    return path


def test_a_compact_file_asked_for_by_another_family_is_refused(fithubert_compact):
    with pytest.raises(CheckpointError) as caught:
        load_student(fithubert_compact, "armhubert")
    assert str(caught.value) == (f"{fithubert_compact}: holds a fithubert student, but the armhubert entry was asked "
                                 "to load it")


def test_overrides_reach_a_stored_config(fithubert_compact):
    model = load_student(fithubert_compact, reference_batched_reuse=True)
    assert model.family == "fithubert" and model.config.reference_batched_reuse is True
