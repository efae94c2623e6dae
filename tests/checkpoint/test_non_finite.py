"""NaN / inf weights are refused on load and on export, with the tensors named (issue 20, item 11).

Every format we read (compact file, Hugging Face folder plain and remote-code, its
``projection_heads.safetensors``, Lightning checkpoint) and every format we write (safetensors,
hf, onnx; ``convert``) is covered; ``allow_non_finite=True`` / ``RECYCLE_DISTILL_ALLOW_NON_FINITE=1``
loads such a file for inspection, with a warning.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from recycle_distill.checkpoint import CheckpointError, load_student, save_compact
from recycle_distill.checkpoint.compact import FORMAT_NAME
from recycle_distill.cli import main as cli_main

from conftest import write_lightning_checkpoint
from helpers.tiny_students import tiny_student

ENV = "RECYCLE_DISTILL_ALLOW_NON_FINITE"
HINT = f"refused (to inspect them, load with allow_non_finite=True or set {ENV}=1)"


@pytest.fixture(autouse=True)
def _no_opt_out(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def _poisoned(state, *keys, value=float("nan")):
    state = {key: tensor.clone() for key, tensor in state.items()}
    for key in keys:
        state[key].view(-1)[0] = value
    return state


def _compact(path, model, state):
    """A compact file written as save_compact writes it (whatever save_compact would refuse)."""
    metadata = {"format": FORMAT_NAME, "format_version": "1", "family": model.family,
                "config": json.dumps(model.config.to_dict(), sort_keys=True)}
    save_file({key: value.contiguous() for key, value in state.items()}, str(path), metadata=metadata)
    return path


def _hf_folder(tmp_path, family):
    from recycle_distill.hf_export import export_hf

    folder = tmp_path / f"{family}-hf"
    export_hf(tiny_student(family), family, str(folder))
    return folder


def _poison_file(path, key, value=float("nan")):
    tensors = load_file(str(path))
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = value
    save_file(tensors, str(path), metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------- load
def test_a_compact_file_with_nan_is_refused_naming_the_tensor(tmp_path):
    model = tiny_student("maskhubert")
    path = _compact(tmp_path / "nan.safetensors", model, _poisoned(model.state_dict(), "encoder.layers.0.fc1.weight"))
    with pytest.raises(CheckpointError) as err:
        load_student(path, "maskhubert")
    assert str(err.value) == (f"{path}: 1 weight tensor(s) hold NaN or infinite values "
                              f"(encoder.layers.0.fc1.weight); {HINT}")


def test_many_broken_tensors_are_named_three_at_a_time(tmp_path):
    model = tiny_student("starhubert")
    keys = sorted(key for key, value in model.state_dict().items() if value.is_floating_point())  # file order
    path = _compact(tmp_path / "inf.safetensors", model, _poisoned(model.state_dict(), *keys, value=float("inf")))
    with pytest.raises(CheckpointError) as err:
        load_student(path, "starhubert")
    assert str(err.value) == (f"{path}: {len(keys)} weight tensor(s) hold NaN or infinite values "
                              f"({keys[0]}, {keys[1]}, {keys[2]}, and {len(keys) - 3} more); {HINT}")


def test_a_lightning_checkpoint_with_inf_is_refused(tmp_path):
    model = tiny_student("armhubert")
    state = _poisoned(model.state_dict(), "mask_emb", value=float("-inf"))
    ckpt = write_lightning_checkpoint(tmp_path / "inf.ckpt", state)
    with pytest.raises(CheckpointError) as err:
        load_student(ckpt, "armhubert", {"distiller": model.config.to_dict()})
    assert str(err.value) == f"{ckpt}: 1 weight tensor(s) hold NaN or infinite values (mask_emb); {HINT}"


@pytest.mark.parametrize("family, hf_key, our_key", [
    ("maskhubert", "encoder.layers.1.feed_forward.output_dense.weight", "encoder.layers.1.fc2.weight"),
    ("armhubert", "encoder.layers.1.fc2.weight", "encoder.layers.1.fc2.weight"),
])
def test_a_hugging_face_folder_with_nan_weights_is_refused(tmp_path, family, hf_key, our_key):
    folder = _hf_folder(tmp_path, family)
    _poison_file(folder / "model.safetensors", hf_key)
    with pytest.raises(CheckpointError) as err:
        load_student(folder)
    assert str(err.value) == (f"{folder / 'model.safetensors'}: 1 weight tensor(s) hold NaN or infinite values "
                              f"({our_key}); {HINT}")


def test_nan_projection_heads_are_refused(tmp_path):
    folder = _hf_folder(tmp_path, "maskhubert")
    heads = folder / "projection_heads.safetensors"
    assert heads.is_file()
    _poison_file(heads, "proj_head.2.lin_proj.weight")
    with pytest.raises(CheckpointError) as err:
        load_student(folder)
    assert str(err.value) == (f"{heads}: 1 weight tensor(s) hold NaN or infinite values "
                              f"(proj_head.2.lin_proj.weight); {HINT}")


def test_the_opt_out_loads_them_for_inspection_with_a_warning(tmp_path, monkeypatch, caplog):
    model = tiny_student("maskhubert")
    path = _compact(tmp_path / "nan.safetensors", model, _poisoned(model.state_dict(), "mask_emb"))
    with caplog.at_level(logging.WARNING):
        loaded = load_student(path, "maskhubert", allow_non_finite=True)
    assert torch.isnan(loaded.state_dict()["mask_emb"]).any()
    assert f"{path}: 1 weight tensor(s) hold NaN or infinite values (mask_emb); loaded anyway" in caplog.text
    monkeypatch.setenv(ENV, "1")
    assert torch.isnan(load_student(path, "maskhubert").state_dict()["mask_emb"]).any()


def test_tensor_names_in_the_message_are_bounded_and_escaped(tmp_path):
    model = tiny_student("maskhubert")
    state = dict(model.state_dict())
    hostile = "x\nERROR: fake" + "y" * 10**4
    state[hostile] = torch.tensor([float("nan")])
    path = _compact(tmp_path / "hostile.safetensors", model, state)
    with pytest.raises(CheckpointError) as err:
        load_student(path, "maskhubert")
    text = str(err.value)
    assert "\n" not in text and len(text) < 500
    assert f"{path}: 1 weight tensor(s) hold NaN or infinite values (x\\nERROR: fakeyyy" in text


# --------------------------------------------------------------------------------------- export
def test_save_compact_refuses_nan_and_writes_nothing(tmp_path):
    model = tiny_student("maskhubert")
    out = tmp_path / "out.safetensors"
    with pytest.raises(CheckpointError) as err:
        save_compact(str(out), _poisoned(model.state_dict(), "mask_emb"), "maskhubert", model.config.to_dict())
    assert str(err.value) == f"not exporting {out}: 1 weight tensor(s) hold NaN or infinite values (mask_emb)"
    assert list(tmp_path.iterdir()) == []


def test_export_hf_refuses_nan_and_writes_nothing(tmp_path):
    from recycle_distill.hf_export import export_hf

    model = tiny_student("armhubert")
    model.load_state_dict(_poisoned(model.state_dict(), "encoder.layers.0.fc1.bias"))
    out = tmp_path / "hf"
    with pytest.raises(CheckpointError) as err:
        export_hf(model, "armhubert", str(out))
    assert str(err.value) == (f"not exporting {out}: 1 weight tensor(s) hold NaN or infinite values "
                              f"(encoder.layers.0.fc1.bias)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt, name", [("safetensors", "out.safetensors"), ("hf", "out-hf"), ("onnx", "out.onnx")])
def test_the_export_command_refuses_nan_in_every_format(tmp_path, capsys, monkeypatch, fmt, name):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    model = tiny_student("maskhubert")
    source = _compact(tmp_path / "nan.safetensors", model, _poisoned(model.state_dict(), "encoder.layers.0.fc1.weight"))
    out = tmp_path / name
    # Loading is refused first; with the opt-out the model loads and the export refuses it.
    assert cli_main(["export", str(source), "--format", fmt, "-o", str(out)]) == 1
    assert capsys.readouterr().err == (f"error: {source}: 1 weight tensor(s) hold NaN or infinite values "
                                       f"(encoder.layers.0.fc1.weight); {HINT}\n")
    monkeypatch.setenv(ENV, "1")
    assert cli_main(["export", str(source), "--format", fmt, "-o", str(out)]) == 1
    assert capsys.readouterr().err == (f"error: not exporting {out}: 1 weight tensor(s) hold NaN or infinite "
                                       f"values (encoder.layers.0.fc1.weight)\n")
    assert not out.exists()


def test_convert_refuses_nan(tmp_path, capsys, monkeypatch):
    model = tiny_student("maskhubert")
    source = write_lightning_checkpoint(tmp_path / "nan.ckpt", _poisoned(model.state_dict(), "mask_emb"))
    config = tmp_path / "m.yaml"
    config.write_text(json.dumps({"distiller": model.config.to_dict()}))
    out = tmp_path / "out.safetensors"
    monkeypatch.setenv(ENV, "1")
    assert cli_main(["convert", str(source), "-g", str(config), "--family", "maskhubert", "-o", str(out)]) == 1
    assert capsys.readouterr().err == (f"error: not exporting {out}: 1 weight tensor(s) hold NaN or infinite "
                                       f"values (mask_emb)\n")
    assert not out.exists()
