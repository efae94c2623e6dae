"""Shared test helpers: paths to the reference data copied into tests/data, tiny checkpoints."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml

from recycle_distill.s3prl.compat import apply_compat

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


def modules_loaded_by(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with ``prefixes`` that a fresh interpreter has loaded after ``imports``."""
    code = (f"import sys, json; import {imports}; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({tuple(prefixes)!r}))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


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


# ------------------------------------------------------------------ the inference fast paths
# The fast blocks (recycle_distill.inference.blocks; build_student(..., blocks="fast") or optimize_for_inference). Inputs past ~14.5 s (a float32 (T, T) map over CHUNK_BYTES) take the row-blocked attention;
# batches whose activations pass LARGE_TENSOR_BYTES run the CNN and the layers per utterance.
# Every fixture is ~1 s, so these thresholds are shrunk here (the one place that knows where
# they live) to make the fixtures take those branches.
FAST_PATH_THRESHOLDS = {
    "recycle_distill.inference.blocks.attention.CHUNK_BYTES": 1024,
    "recycle_distill.inference.blocks.conv_runner.LARGE_TENSOR_BYTES": 1024,
    "recycle_distill.inference.blocks.encoder.LARGE_TENSOR_BYTES": 1024,
}


def shrink_fast_paths(monkeypatch) -> None:
    """Patch every fast-path threshold down so ~1 s inputs take the blocked / per-utterance branches."""
    for target, value in FAST_PATH_THRESHOLDS.items():
        monkeypatch.setattr(target, value)


@pytest.fixture(params=["plain", "fast", "fast-shrunk"])
def fast_paths(request, monkeypatch):
    """How a test prepares its model: as built (the plain blocks), through
    ``optimize_for_inference`` with the shipped thresholds, and with them shrunk
    (see FAST_PATH_THRESHOLDS). Returns ``prepare(model) -> model``."""
    from recycle_distill.inference import optimize_for_inference

    if request.param == "plain":
        return lambda model: model
    if request.param == "fast-shrunk":
        shrink_fast_paths(monkeypatch)
    return lambda model: optimize_for_inference(model)


# The map-free attention reuse (recycle_distill.students.blocks.map_free): its row-block budget,
# and the map size past which the fast blocks hand on queries and keys instead of the map, shrunk
# so ~1 s fixtures take several blocks and the fast blocks' map-free branch.
MAP_FREE_THRESHOLDS = {
    "recycle_distill.students.blocks.map_free.BLOCK_BYTES": 1024,
    "recycle_distill.inference.blocks.attention.MAP_FREE_FROM_BYTES": 0,
}


@pytest.fixture(params=["plain", "fast", "fast-shrunk", "map-free", "map-free-shrunk", "fast-map-free-shrunk"])
def any_blocks(request, monkeypatch):
    """:func:`fast_paths`' three ways, plus the map-free reuse blocks (swapped in as a student
    built with ``blocks="map_free"`` has them; ``-shrunk``: :data:`MAP_FREE_THRESHOLDS`) and the
    fast blocks taking their map-free branch. Returns ``prepare(model) -> model``."""
    from recycle_distill.inference import optimize_for_inference
    from recycle_distill.inference.optimize import swap_blocks
    from recycle_distill.students.blocks.map_free import MAP_FREE_BLOCKS

    if "shrunk" in request.param:
        shrink_fast_paths(monkeypatch)
    if "map-free-shrunk" in request.param:
        for target, value in MAP_FREE_THRESHOLDS.items():
            monkeypatch.setattr(target, value)
    def map_free(model):
        swap_blocks(model, MAP_FREE_BLOCKS)
        return model

    if request.param == "plain":
        return lambda model: model
    if request.param.startswith("map-free"):
        return map_free
    return lambda model: optimize_for_inference(model)
