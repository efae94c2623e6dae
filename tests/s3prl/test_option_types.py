"""Boolean options of the Python API take real bools only (issue 20, item 15).

``optimize="no"`` used to count as true (a non-empty string). Every boolean option of the hub
entries, ``StudentUpstream``, ``optimize_for_inference``, ``load_student`` and the ONNX runner
refuses a string (or a number) with one line naming the option; real bools (numpy's too)
work as before.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from recycle_distill import build_student
from recycle_distill.checkpoint import load_student
from recycle_distill.inference import optimize_for_inference
from recycle_distill.s3prl.upstream import StudentUpstream


def _hubconf(family):
    return importlib.import_module(f"recycle_distill.upstreams.{family}.hubconf")


def _message(name, value):
    return f"{name}: expected True or False, got {value!r} ({type(value).__name__})"


@pytest.mark.parametrize("value", ["no", "false", "False", "0", "", 0, 1, None])
def test_student_upstream_refuses_an_optimize_that_is_not_a_bool(tiny_arm_files, value):
    ckpt, config, _ = tiny_arm_files
    with pytest.raises(ValueError) as err:
        StudentUpstream(str(ckpt), str(config), family="armhubert", optimize=value)
    assert str(err.value) == _message("optimize", value)


@pytest.mark.parametrize("option", ["fast_paths", "inplace"])
@pytest.mark.parametrize("value", ["no", "false", "true", 1])
def test_optimize_for_inference_refuses_strings(option, value):
    model = build_student("armhubert")
    with pytest.raises(ValueError) as err:
        optimize_for_inference(model, **{option: value})
    assert str(err.value) == _message(option, value)


@pytest.mark.parametrize("entry, args", [
    ("armhubert_local", ()), ("armhubert_url", ()), ("armhubert", ()),
])
def test_hub_entries_refuse_a_refresh_that_is_not_a_bool(tiny_arm_files, entry, args):
    ckpt, config, _ = tiny_arm_files
    with pytest.raises(ValueError) as err:
        getattr(_hubconf("armhubert"), entry)(str(ckpt), str(config), refresh="no")
    assert str(err.value) == _message("refresh", "no")


def test_a_release_entry_refuses_refresh_as_a_string_before_any_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as err:
        _hubconf("armhubert").armhubert_960h(refresh="false")
    assert str(err.value) == _message("refresh", "false")


def test_the_upstream_refuses_optimize_as_a_string_through_the_hub_entry(tiny_arm_files):
    ckpt, config, _ = tiny_arm_files
    with pytest.raises(ValueError) as err:
        _hubconf("armhubert").armhubert_local(str(ckpt), str(config), optimize="no")
    assert str(err.value) == _message("optimize", "no")


def test_load_student_refuses_allow_non_finite_as_a_string(tiny_arm_files):
    ckpt, config, _ = tiny_arm_files
    with pytest.raises(ValueError) as err:
        load_student(ckpt, "armhubert", config, allow_non_finite="yes")
    assert str(err.value) == _message("allow_non_finite", "yes")


def test_onnx_entry_refuses_refresh_as_a_string(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "x.onnx"
    path.write_bytes(b"not read")
    with pytest.raises(ValueError) as err:
        _hubconf("armhubert").armhubert_onnx(str(path), refresh="no")
    assert str(err.value) == _message("refresh", "no")


def test_real_bools_work_as_before(tiny_arm_files):
    ckpt, config, _ = tiny_arm_files
    plain = StudentUpstream(str(ckpt), str(config), family="armhubert", optimize=False)
    fast = StudentUpstream(str(ckpt), str(config), family="armhubert", optimize=np.bool_(True))
    waves = [torch.randn(16000, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        a, b = plain(waves)["hidden_states"], fast(waves)["hidden_states"]
    assert len(a) == len(b) and all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a, b))
    model = build_student("armhubert")
    assert optimize_for_inference(model, fast_paths=False, inplace=False) is not model
    assert optimize_for_inference(model, fast_paths=True, inplace=True) is model
    assert load_student(ckpt, "armhubert", config, allow_non_finite=False).family == "armhubert"
