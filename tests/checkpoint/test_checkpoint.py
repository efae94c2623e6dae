"""Released checkpoints load safely and strictly; compact checkpoints round-trip."""

import json
import pickle

import pytest
import torch
from s3prl.optimizers import WarmupLinearSchedule

from recycle_distill import build_student
from recycle_distill.checkpoint import (
    CheckpointError,
    load_student,
    read_compact,
    safe_torch_load,
    save_compact,
)
from recycle_distill.cli import main as cli_main

from conftest import load_fixture, write_lightning_checkpoint, write_yaml

pytestmark = pytest.mark.s3prl


def _released_like(tmp_path, fixture, **extra):
    """The released layout: student + teacher tensors, optimizer state with a pickled s3prl schedule."""
    schedule = WarmupLinearSchedule(warmup=0.05, t_total=1000)
    optimizer_states = [{"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": [{"lr": 5e-3, "schedule": schedule, "params": [0]}]}]
    return write_lightning_checkpoint(
        tmp_path / "released.ckpt",
        fixture["state_dict"],
        {"optimizer_states": optimizer_states, "hyper_parameters": {"family": "maskhubert", "note": "ignored"}, **extra},
    )


def test_plain_weights_only_refuses_but_our_loader_accepts(tmp_path):
    fixture = load_fixture("golden_tiny_armhubert.pt")
    ckpt = _released_like(tmp_path, fixture)
    with pytest.raises(pickle.UnpicklingError, match="WarmupLinearSchedule"):
        torch.load(ckpt, weights_only=True)
    loaded = safe_torch_load(ckpt)
    schedule = loaded["optimizer_states"][0]["param_groups"][0]["schedule"]
    assert schedule.t_total == 1000.0 and "stand-in" in repr(schedule)
    assert not isinstance(schedule, WarmupLinearSchedule)  # inert data, not the real class


def test_released_checkpoint_loads_exactly_and_family_comes_from_the_caller(tmp_path):
    fixture = load_fixture("golden_tiny_armhubert.pt")
    ckpt = _released_like(tmp_path, fixture)
    config = write_yaml(tmp_path / "arch.yaml", {"distiller": fixture["config"]})
    model = load_student(ckpt, "armhubert", config)  # hyper_parameters say maskhubert: ignored
    assert model.family == "armhubert"
    for key, value in fixture["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value)


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Exploit()}, path)
    with pytest.raises(CheckpointError, match="system.*not on the allow-list"):
        load_student(path, "armhubert", "armhubert")
    assert not marker.exists()


def test_strict_loading_lists_missing_and_unexpected_keys(tmp_path):
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    state = dict(fixture["state_dict"])
    del state["encoder.layers.0.fc1.weight"]
    state["encoder.layers.0.extra.weight"] = torch.zeros(1)
    ckpt = write_lightning_checkpoint(tmp_path / "bad.ckpt", state)
    with pytest.raises(CheckpointError) as error:
        load_student(ckpt, "maskhubert", fixture["config"])
    assert "missing keys: encoder.layers.0.fc1.weight" in str(error.value)
    assert "unexpected keys: encoder.layers.0.extra.weight" in str(error.value)


def test_checkpoint_that_does_not_match_its_config_names_the_shapes(tmp_path):
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    ckpt = write_lightning_checkpoint(tmp_path / "m.ckpt", fixture["state_dict"])
    wrong = dict(fixture["config"], encoder_ffn_embed_dim=128)
    with pytest.raises(CheckpointError, match=r"fc1.weight: checkpoint \(192, 96\) vs model \(128, 96\)"):
        load_student(ckpt, "maskhubert", wrong)


def test_truncated_checkpoint_is_reported(tmp_path):
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    ckpt = write_lightning_checkpoint(tmp_path / "full.ckpt", fixture["state_dict"])
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_student(truncated, "maskhubert", fixture["config"])
    with pytest.raises(CheckpointError, match="not found"):
        load_student(tmp_path / "nope.ckpt", "maskhubert", fixture["config"])


def test_star_drops_final_proj_and_loads_strictly(tmp_path):
    fixture = load_fixture("golden_tiny_starhubert.pt")
    state = dict(fixture["state_dict"], **{"final_proj.weight": torch.zeros(4, 96), "final_proj.bias": torch.zeros(4)})
    ckpt = write_lightning_checkpoint(tmp_path / "star.ckpt", state)
    model = load_student(ckpt, "starhubert", fixture["config"])
    assert "final_proj.weight" not in model.state_dict()


def test_weights_matching_a_preset_need_no_config(tmp_path):
    model = build_student("armhubert_s")
    ckpt = write_lightning_checkpoint(tmp_path / "s.ckpt", model.state_dict())
    loaded = load_student(ckpt, "armhubert")
    assert loaded.config.encoder_embed_dim == 432


def test_convert_writes_a_compact_checkpoint_that_loads_without_config(tmp_path, capsys):
    fixture = load_fixture("golden_tiny_armhubert.pt")
    ckpt = _released_like(tmp_path, fixture)
    config = write_yaml(tmp_path / "arch.yaml", {"distiller": fixture["config"]})
    out = tmp_path / "tiny.safetensors"
    assert cli_main(["convert", str(ckpt), "-g", str(config), "-o", str(out)]) == 0
    assert "398,400 parameters" in capsys.readouterr().out
    state, family, stored = read_compact(str(out))
    assert family == "armhubert" and set(state) == set(fixture["state_dict"])
    assert not any(k.startswith("teacher") for k in state)
    model = load_student(out, "armhubert")
    assert model.config.reuse_pattern == [True, False, True, False]
    for key, value in fixture["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value)
    # Refuses to clobber without --force; a family mismatch is an error.
    assert cli_main(["convert", str(ckpt), "-g", str(config), "-o", str(out)]) == 1
    with pytest.raises(CheckpointError, match="holds a armhubert student"):
        load_student(out, "maskhubert")


def test_compact_metadata_is_versioned(tmp_path):
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    path = tmp_path / "m.safetensors"
    save_compact(str(path), fixture["state_dict"], "maskhubert", fixture["config"])
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "recycle-distill-student" and metadata["format_version"] == "1"
    assert json.loads(metadata["config"])["encoder_layers"] == 4
    assert not list(tmp_path.glob(".tmp-*"))  # the atomic write left no temp file


def test_safe_loading_is_a_leaf_the_teacher_imports_without_the_student_stack():
    """Issue 11: the teacher imported the whole student stack through recycle_distill.checkpoint."""
    from conftest import modules_loaded_by

    loaded = modules_loaded_by("recycle_distill.training.teacher, recycle_distill.checkpoint.safe_load",
                               ("recycle_distill.students.model", "recycle_distill.students.registry",
                                "recycle_distill.checkpoint.loading", "recycle_distill.students.build"))
    assert loaded == []


def test_strict_load_report_is_shared_by_student_and_teacher(tmp_path):
    """Issue 11: the missing/unexpected/shape report is one function (recycle_distill.checkpoint.state_dict_diff)."""
    from recycle_distill.checkpoint.state_dict_diff import diff_state_dicts
    from recycle_distill.training.teacher.s3prl_models import build_s3prl_model
    from recycle_distill.training.teacher.fairseq_checkpoint import read_teacher_checkpoint
    from recycle_distill.training.teacher.s3prl_models import TeacherCheckpointError

    diff = diff_state_dicts({"a": torch.zeros(2), "b": torch.zeros(3, 1)}, {"b": torch.zeros(3), "c": torch.zeros(1)})
    assert diff.parts() == ["missing keys: a", "unexpected keys: c", "shape mismatches: b: checkpoint (3,) vs model (3, 1)"]
    assert not diff_state_dicts({"a": torch.zeros(2)}, {"a": torch.ones(2)})
    from conftest import DATA

    spec = read_teacher_checkpoint(DATA / "teacher" / "tiny_hubert_fairseq.pt")
    spec.state_dict = {("encoder.extra" if i == 0 else key): value for i, (key, value) in enumerate(spec.state_dict.items())}
    with pytest.raises(TeacherCheckpointError, match=r"built from its cfg; missing keys: .*; unexpected keys: encoder.extra$"):
        build_s3prl_model(spec)


@pytest.mark.parametrize("family", ["armhubert", "fithubert"])
def test_compact_files_written_by_commit_2273f47_still_load(family):
    """Issue 11: state-dict keys of every format we write stay loadable. tests/data/compat_2273f47
    holds compact files written by that commit and the outputs that commit computed from them."""
    from conftest import DATA
    from recycle_distill.s3prl.upstream import StudentUpstream

    folder = DATA / "compat_2273f47"
    recorded = torch.load(folder / "outputs.pt", weights_only=True)
    upstream = StudentUpstream(str(folder / f"tiny_{family}.safetensors"), family=family).eval()
    with torch.no_grad():
        output = upstream(recorded["wavs"])["last_hidden_state"]
    expected = recorded["last_hidden_state"][family]
    assert output.shape == expected.shape
    assert (output - expected).abs().max() <= 1e-5
