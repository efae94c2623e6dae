"""S3PRL's real run_downstream trains and evaluates our students for a few steps on tiny data.

Two routes:

1. a patched S3PRL checkout (the installed package copied to ``<root>/s3prl`` + git's configs,
   ``python patch_hub.py <root>``, then ``python run_downstream.py`` in ``<root>/s3prl``) — the
   default stack only: on torchaudio >= 2.9 S3PRL's own script cannot import;
2. our launcher (``python -m recycle_distill superb`` / ``recycle-distill superb``) on the
   pip-installed s3prl — marked ``s3prl`` so CI also runs it on the compat stack.

Matrix: checkout SID/armhubert (+ launcher evaluate from the checkout), checkout SID/armhubert
train, evaluate -e, resume -e and --revert through run_downstream.py alone, checkout ASR/maskhubert;
launcher SID/starhubert (+ evaluate, resume), launcher ASR/armhubert with -f.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recycle_distill.s3prl.compat import compat_needed
from recycle_distill.s3prl.superb.launcher import HEADER
from recycle_distill.s3prl.superb.logs import read_s3prl_results

from conftest import load_fixture
from helpers.superb_data import (
    run_checked as _run,
    asr_overrides,
    make_s3prl_checkout,
    make_tiny_asr,
    make_tiny_voxceleb1,
    sid_overrides,
    tiny_checkpoint,
    voxceleb1_cache,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600
checkout_only = pytest.mark.skipif(
    compat_needed(), reason="S3PRL's own run_downstream.py cannot import on torchaudio >= 2.9; use the launcher")


def _states(expdir: Path) -> list[Path]:
    return sorted(expdir.glob("states-*.ckpt"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny corpora and checkpoints shared by the module's runs."""
    root = tmp_path_factory.mktemp("superb_data")
    checkpoints = {family: tiny_checkpoint(root / "ckpt", family) for family in ("armhubert", "maskhubert", "starhubert")}
    return {"vox": make_tiny_voxceleb1(root / "vox"), "asr": make_tiny_asr(root / "asr"), "ckpt": checkpoints}


def _upstream_args(data, family: str) -> list[str]:
    ckpt, config = data["ckpt"][family]
    return ["-u", family, "-k", str(ckpt), "-g", str(config)]


# ------------------------------------------------------------------------------------------
# Route 1: a patched checkout, S3PRL's own run_downstream.py (default stack)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A fake S3PRL git checkout, patched by patch_hub.py; returns its root."""
    if compat_needed():
        pytest.skip("S3PRL's own run_downstream.py cannot import on torchaudio >= 2.9")
    root = make_s3prl_checkout(tmp_path_factory.mktemp("s3prl_checkout"))
    result = subprocess.run([sys.executable, str(REPO / "patch_hub.py"), str(root)], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "recycle-distill upstreams" in (root / "s3prl" / "hub.py").read_text()
    return root


@checkout_only
def test_checkout_route_imports_s3prl_from_the_checkout(checkout):
    result = _run([sys.executable, "-c", "import s3prl; print(s3prl.__file__)"], checkout / "s3prl", PYTHONPATH=str(checkout))
    assert Path(result.stdout.strip()).resolve().is_relative_to((checkout / "s3prl").resolve())


@checkout_only
def test_checkout_route_sid_armhubert_then_launcher_evaluate(checkout, data, tmp_path):
    expdir = tmp_path / "sid_arm"
    package_cache = voxceleb1_cache()
    cache_before = sorted(package_cache.rglob("*")) if package_cache.exists() else []
    _run([sys.executable, "run_downstream.py", "-m", "train", "-p", str(expdir), "-d", "voxceleb1",
          *_upstream_args(data, "armhubert"), "--device", "cpu", "-o", sid_overrides(data["vox"])],
         checkout / "s3prl", expdir.parent / "sid_arm_train.log", PYTHONPATH=str(checkout))
    assert [p.name for p in _states(expdir)] == ["states-4.ckpt"]
    log = (expdir / "log.log").read_text()
    assert "dev at step 4:" in log and "test at step 4:" in log
    # The checkout's patch_hub-tweaked config ran (no -c), and its own file-list cache was used.
    config = yaml.safe_load(next(expdir.glob("config_*.yaml")).read_text())
    assert config["scheduler"]["name"] == "linear_schedule_with_warmup" and config["optimizer"]["lr"] == 1.0e-3
    assert (checkout / "s3prl" / "downstream" / "voxceleb1" / ".cache" / "train.pkl").is_file()
    assert (sorted(package_cache.rglob("*")) if package_cache.exists() else []) == cache_before

    # The launcher works with the checkout too (s3prl from PYTHONPATH, hub.py already patched).
    states = _states(expdir)[0]
    result = _run([sys.executable, "-m", "recycle_distill", "superb", "-m", "evaluate", "-e", str(states)],
                  checkout / "s3prl", PYTHONPATH=str(checkout))
    assert f"at {checkout.resolve() / 's3prl'}" in result.stdout or f"at {checkout / 's3prl'}" in result.stdout
    assert "test acc:" in result.stdout and "test at step 0:" in (expdir / "log.log").read_text()
    (row,) = read_s3prl_results([expdir])
    assert "SID" in row.values and "-m evaluate" in row.sources["SID"]


def _tree_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but what running S3PRL leaves (__pycache__, its voxceleb1 .cache)."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and not {"__pycache__", ".cache"} & set(path.relative_to(root).parts)}


@checkout_only
def test_checkout_route_train_evaluate_resume_then_revert_is_byte_exact(data, tmp_path):
    """The design card's route end to end through S3PRL's own run_downstream.py, no launcher: the
    patch's allow-list in the runner lets torch's default weights-only loader read S3PRL's states."""
    root = make_s3prl_checkout(tmp_path / "checkout")
    before = _tree_files(root)
    _run([sys.executable, str(REPO / "patch_hub.py"), str(root)], tmp_path)
    scripts, expdir = root / "s3prl", tmp_path / "sid_arm"
    _run([sys.executable, "run_downstream.py", "-m", "train", "-p", str(expdir), "-d", "voxceleb1",
          *_upstream_args(data, "armhubert"), "--device", "cpu", "-o", sid_overrides(data["vox"])],
         scripts, PYTHONPATH=str(root))
    assert [p.name for p in _states(expdir)] == ["states-4.ckpt"]

    result = _run([sys.executable, "run_downstream.py", "-m", "evaluate", "-e", str(expdir / "states-4.ckpt"),
                   "--device", "cpu"], scripts, PYTHONPATH=str(root))
    assert "test acc:" in result.stdout and "test at step 0:" in (expdir / "log.log").read_text()

    _run([sys.executable, "run_downstream.py", "-m", "train", "-e", str(expdir / "states-4.ckpt"),
          "--device", "cpu",
          "-o", "config.runner.total_steps=6,,config.runner.save_step=6,,config.runner.eval_step=6"],
         scripts, PYTHONPATH=str(root))
    assert [p.name for p in _states(expdir)] == ["states-6.ckpt"]
    with torch.serialization.safe_globals([argparse.Namespace]):  # what the patched runner allow-lists
        resumed = torch.load(expdir / "states-6.ckpt", map_location="cpu")
    assert resumed["Step"] == 6 and resumed["Args"].upstream == "armhubert"

    _run([sys.executable, str(REPO / "patch_hub.py"), "--revert", str(root)], tmp_path)
    assert _tree_files(root) == before


@checkout_only
def test_checkout_route_asr_maskhubert(checkout, data, tmp_path):
    expdir = tmp_path / "asr_mask"
    expdir.mkdir()
    # No -c and no dict_path: the checkout's patched asr/config.yaml and its ./downstream/asr/char.dict.
    result = _run([sys.executable, "run_downstream.py", "-m", "train", "-p", str(expdir), "-d", "asr",
                   *_upstream_args(data, "maskhubert"), "--device", "cpu",
                   "-o", asr_overrides(data["asr"], with_dict=False)],
                  checkout / "s3prl", expdir / "stdout.log", PYTHONPATH=str(checkout))
    assert [p.name for p in _states(expdir)] == ["states-4.ckpt"]
    assert "dev-clean wer:" in result.stdout and "test-clean wer:" in result.stdout
    config = yaml.safe_load(next(expdir.glob("config_*.yaml")).read_text())
    assert config["scheduler"]["name"] == "linear_schedule_with_warmup"
    (row,) = read_s3prl_results([expdir])
    # S3PRL prints "test-clean wer: <percent>"; the score reader must report the last one printed.
    printed = [float(value) for value in re.findall(r"test-clean wer: ([0-9.eE+-]+)", result.stdout)]
    assert printed and row.values["ASR"] == pytest.approx(printed[-1]) and "during training" in row.sources["ASR"]


# ------------------------------------------------------------------------------------------
# Route 2: the launcher on the pip-installed s3prl (both stacks)
# ------------------------------------------------------------------------------------------


# S3PRL caches voxceleb1 file lists inside its installed package (a module-level CACHE_PATH);
# the launcher runs here with that path pointed at the test's own folder, so tests never touch
# (or race on) the package's cache.
_ISOLATED_VOX_LAUNCHER = """
import runpy, sys
cache = sys.argv.pop(1)
run_module = runpy.run_module

def run(name, *args, **kwargs):
    if name == "s3prl.run_downstream":  # the launcher has applied the compat layer by now
        import s3prl.downstream.voxceleb1.dataset as dataset
        dataset.CACHE_PATH = cache
    return run_module(name, *args, **kwargs)

runpy.run_module = run
sys.argv.insert(1, "superb")
run_module("recycle_distill", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def own_vox_cache(tmp_path):
    """(launcher command, per-test cache folder); the package's own cache is left as it was."""
    package_cache = voxceleb1_cache()
    before = sorted(package_cache.rglob("*")) if package_cache.exists() else []
    cache = tmp_path / "vox_cache"
    yield [sys.executable, "-c", _ISOLATED_VOX_LAUNCHER, f"{cache}/"], cache
    assert (sorted(package_cache.rglob("*")) if package_cache.exists() else []) == before


@pytest.mark.s3prl
def test_launcher_sid_starhubert_train_evaluate_resume(data, tmp_path, own_vox_cache):
    expdir = tmp_path / "sid_star"
    launcher, cache = own_vox_cache
    result = _run(launcher + ["-m", "train", "-p", str(expdir), "-d", "voxceleb1", *_upstream_args(data, "starhubert"),
                              "-o", sid_overrides(data["vox"])], tmp_path)
    assert f"{HEADER} registered" in result.stdout and "voxceleb1.yaml" in result.stdout
    assert "device: cpu" in result.stdout or torch.cuda.is_available()
    assert ("compat layer applied" in result.stdout) == compat_needed()
    assert [p.name for p in _states(expdir)] == ["states-4.ckpt"]
    log = (expdir / "log.log").read_text()
    assert "dev at step 4:" in log and "test at step 4:" in log
    assert (cache / "train.pkl").is_file()  # S3PRL's file-list cache, in this test's folder
    states = torch.load(_states(expdir)[0], map_location="cpu", weights_only=False)
    assert "Upstream" not in states and states["Args"].upstream == "starhubert"  # frozen without -f

    # -m evaluate -e: S3PRL's torch.load of its own checkpoint passes the weights-only loader.
    result = _run(launcher + ["-m", "evaluate", "-e", str(expdir / "states-4.ckpt")], tmp_path)
    assert "test acc:" in result.stdout
    assert f"{HEADER} run: mode=evaluate split=test" in (expdir / "superb.log").read_text()

    # Resume training with -e to step 6.
    _run(launcher + ["-m", "train", "-e", str(expdir / "states-4.ckpt"),
                     "-o", "config.runner.total_steps=6,,config.runner.save_step=6,,config.runner.eval_step=6"], tmp_path)
    assert [p.name for p in _states(expdir)] == ["states-6.ckpt"]
    assert torch.load(expdir / "states-6.ckpt", map_location="cpu", weights_only=False)["Step"] == 6

    (row,) = read_s3prl_results([expdir])
    assert row.name == "starhubert:tiny_starhubert" and "-m evaluate" in row.sources["SID"]


@pytest.mark.s3prl
def test_launcher_asr_armhubert_finetunes_the_upstream(data, tmp_path):
    expdir = tmp_path / "asr_arm"
    # Through the `recycle-distill superb` subcommand; no dict_path: the launcher adds the shipped one.
    result = _run([sys.executable, "-m", "recycle_distill", "superb", "-m", "train", "-p", str(expdir), "-d", "asr",
                   *_upstream_args(data, "armhubert"), "-f", "-o", asr_overrides(data["asr"], with_dict=False)], tmp_path)
    assert "asr_char.dict" in result.stdout and "asr.yaml" in result.stdout
    assert [p.name for p in _states(expdir)] == ["states-4.ckpt"]
    log = (expdir / "superb.log").read_text()
    assert "dev-clean wer:" in log and "test-clean wer:" in log

    states = torch.load(expdir / "states-4.ckpt", map_location="cpu", weights_only=False)
    trained = states["Upstream"]
    original = load_fixture("golden_tiny_armhubert.pt")["state_dict"]
    changed = [key for key, value in original.items()
               if value.is_floating_point() and not torch.equal(trained[f"model.{key}"], value)]
    floating = [key for key, value in original.items() if value.is_floating_point()]
    unchanged = sorted(set(floating) - set(changed))
    # Only what the forward pass never touches without masking may stay put.
    assert set(unchanged) <= {"mask_emb"}, unchanged
    assert "encoder.layers.0.fc1.weight" in changed and "feature_extractor.conv_layers.0.0.weight" in changed
