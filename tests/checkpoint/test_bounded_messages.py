"""Error messages carry what the user gave bounded and escaped, through the Python API too
(issue 20, item 18): a family name of 10^6 characters, a path or a key holding a newline that
would start a fake ``ERROR:`` line. Each message stays one line of bounded length, and an
ordinary value still reads as before.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from recycle_distill import build_student, families
from recycle_distill.checkpoint import CheckpointError, load_student, safe_torch_load
from recycle_distill.checkpoint.fetch import fetch_checkpoint
from recycle_distill.inference import parse_precision
from recycle_distill.s3prl import hub_entries
from recycle_distill.s3prl.upstream import StudentUpstream
from recycle_distill.students.build import block_table, preset_path, resolve_config
from recycle_distill.students.config import ConfigError, load_config_dict

from conftest import write_lightning_checkpoint
from helpers.tiny_students import tiny_student

HOSTILE = "x\nERROR: fake" + "y" * 10**6
LIMIT = 1000


def _check(err, *starts):
    # A KeyError's str() is the repr of its message; its message is what we wrote.
    text = err.value.args[0] if isinstance(err.value, KeyError) else str(err.value)
    assert "\n" not in text and len(text) < LIMIT, (len(text), text[:300])
    assert "x\\nERROR: fake" in text
    for start in starts:
        assert text.startswith(start), text[:300]


@pytest.mark.parametrize("call, start, error", [
    (lambda: build_student("armhubert", family=HOSTILE), "unknown student family 'x\\nERROR: fake", ConfigError),
    (lambda: resolve_config("armhubert", HOSTILE), "unknown student family 'x\\nERROR: fake", ConfigError),
    (lambda: families.family(HOSTILE), "unknown student family 'x\\nERROR: fake", KeyError),
    (lambda: preset_path(HOSTILE), "unknown preset 'x\\nERROR: fake", ConfigError),
    (lambda: resolve_config(HOSTILE), "'x\\nERROR: fake", ConfigError),
    (lambda: load_config_dict(HOSTILE), "config file not found: x\\nERROR: fake", ConfigError),
    (lambda: block_table(HOSTILE), "blocks: expected one of plain, fast, map_free, got 'x\\nERROR: fake", ValueError),
    (lambda: parse_precision(HOSTILE), "dtype: unsupported precision 'x\\nERROR: fake", ValueError),
    (lambda: load_student(HOSTILE, "armhubert"), "checkpoint not found: x\\nERROR: fake", CheckpointError),
    (lambda: fetch_checkpoint(HOSTILE), "checkpoint not found: x\\nERROR: fake", FileNotFoundError),
    (lambda: fetch_checkpoint("hf://" + HOSTILE), "expected hf://owner/repo/file, got hf://x\\nERROR: fake", ValueError),
    (lambda: hub_entries.load_upstream(HOSTILE, None), "x\\nERROR: fake", ValueError),
    (lambda: StudentUpstream(HOSTILE, family="armhubert"), "checkpoint not found: x\\nERROR: fake", CheckpointError),
], ids=["build_student-family", "resolve_config-family", "families.family", "preset_path", "resolve_config-source",
        "load_config_dict", "block_table", "parse_precision", "load_student-path", "fetch_checkpoint-path",
        "fetch_checkpoint-hf-url", "load_upstream-family", "StudentUpstream-path"])
def test_api_messages_bound_and_escape_user_strings(call, start, error):
    with pytest.raises(error) as err:
        call()
    _check(err, start)


def test_load_student_bounds_a_hostile_family(tmp_path):
    ckpt = write_lightning_checkpoint(tmp_path / "a.ckpt", tiny_student("armhubert").state_dict())
    with pytest.raises(CheckpointError) as err:
        load_student(ckpt, HOSTILE)
    _check(err, "unknown student family 'x\\nERROR: fake")


def test_a_hostile_file_name_is_escaped(tmp_path):
    path = tmp_path / "x\nERROR: fake.ckpt"
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError) as err:
        safe_torch_load(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{tmp_path}/x\\nERROR: fake.ckpt: truncated or corrupt checkpoint")


def test_hostile_key_names_in_a_checkpoint_are_bounded(tmp_path):
    state = dict(tiny_student("armhubert").state_dict())
    for index in range(50):
        state[f"{HOSTILE[:5000]}{index}"] = torch.zeros(1)
    ckpt = write_lightning_checkpoint(tmp_path / "keys.ckpt", state)
    with pytest.raises(CheckpointError) as err:
        load_student(ckpt, "armhubert", {"distiller": tiny_student("armhubert").config.to_dict()})
    text = str(err.value)
    assert "\nERROR" not in text and len(text) < 3000, len(text)
    assert "unexpected keys: x\\nERROR: fake" in text


def test_export_onnx_bounds_a_hostile_family(tmp_path):
    pytest.importorskip("onnx")
    from recycle_distill.inference.onnx_export import export_onnx

    with pytest.raises(ValueError) as err:
        export_onnx(tiny_student("maskhubert"), tmp_path / "m.onnx", family=HOSTILE)
    _check(err, "export_onnx: family 'x\\nERROR: fake")


def test_onnx_runner_and_entry_bound_hostile_strings(tmp_path):
    pytest.importorskip("onnxruntime")
    from recycle_distill.inference.onnx_runtime import OnnxStudentUpstream

    with pytest.raises(FileNotFoundError) as err:
        OnnxStudentUpstream(tmp_path / HOSTILE[:200])
    assert "\n" not in str(err.value) and "x\\nERROR: fake" in str(err.value)
    path = tmp_path / "x.onnx"
    path.write_bytes(b"")
    with pytest.raises(TypeError) as err:
        hub_entries.load_onnx_upstream("armhubert", str(path), **{HOSTILE: 1})
    _check(err, "armhubert_onnx: unexpected options x\\nERROR: fake")


def test_ordinary_values_read_as_before(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_student("armhubert", family="bert")
    assert str(err.value) == "unknown student family 'bert'; known: armhubert, maskhubert, starhubert, fithubert"
    with pytest.raises(CheckpointError) as err:
        load_student(tmp_path / "missing.ckpt", "armhubert")
    assert str(err.value) == f"checkpoint not found: {tmp_path / 'missing.ckpt'}"


def test_superb_score_bounds_hostile_values_and_names(tmp_path):
    from recycle_distill.s3prl.superb.score import read_table

    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({HOSTILE[:3000]: {"SID": HOSTILE[:5000]}}))
    with pytest.raises(ValueError) as err:
        read_table(path)
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, len(text)
    assert text.startswith("mine.yaml: x\\nERROR: fake") and "expected a number, got 'x\\nERROR: fake" in text
