"""patch_hub.py's blocks in S3PRL's own modules (recycle_distill/s3prl/patch/inserts.py): the
checkpoint allow-list in ``downstream/runner.py``, the tri-stage scheduler in ``schedulers.py``,
and the note when this Python imports another s3prl than the tree patched.

The tree is the fixture tests/data/s3prl_tree plus the installed s3prl 0.4.18's real
``downstream/runner.py`` and ``schedulers.py`` (the fixture has neither).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recycle_distill.s3prl import patch as ph
from recycle_distill.s3prl.patch.inserts import INSERTS
from recycle_distill.cli.patch_hub import main as patch_hub_main

from helpers.superb_data import s3prl_package_dir

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "data" / "s3prl_tree"
MODULES = ("downstream/runner.py", "schedulers.py")
TRI_STAGE = "recycle_distill.downstreams.cif_asr.tri_stage"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The fixture tree with S3PRL's real runner.py and schedulers.py."""
    dst = tmp_path / "s3prl_checkout"
    shutil.copytree(FIXTURE, dst, symlinks=True)
    for key in MODULES:
        shutil.copyfile(s3prl_package_dir() / key, dst / "s3prl" / key)
    return dst


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def run(capsys, *args) -> tuple[int, str, str]:
    code = patch_hub_main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_both_modules_get_their_block_recorded_and_revert_restores_them_byte_for_byte(root, capsys):
    before = snapshot(root)
    code, out, err = run(capsys, root)
    assert code == ph.EXIT_OK, err
    package = root / "s3prl"
    for insert in INSERTS:
        text = (package / insert.key).read_text()
        original = before[f"s3prl/{insert.key}"].decode()
        # Appended after a blank line, nothing else of the file touched.
        assert text == original + "\n" + insert.block()
        assert (package / (insert.key + ph.BACKUP_SUFFIX)).read_bytes() == original.encode()
    runner = (package / "downstream/runner.py").read_text()
    assert "add_safe_globals([_recycle_distill_argparse.Namespace])" in runner
    assert f"from {TRI_STAGE} import get_tri_stage_schedule" in (package / "schedulers.py").read_text()
    manifest = json.loads((package / ph.MANIFEST_NAME).read_text())
    assert set(MODULES) <= set(manifest["patched"])
    assert "Done: 12 item(s) patched" in out  # the fixture's 10 + the two blocks

    code, out, err = run(capsys, root)
    assert code == ph.EXIT_OK and "Nothing changed: already patched." in out
    code, out, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_OK, err
    assert "Done: 12 item(s) reverted." in out
    assert snapshot(root) == before


def test_dry_run_shows_the_blocks_and_writes_nothing(root, capsys):
    before = snapshot(root)
    code, out, _ = run(capsys, "--dry-run", root)
    assert code == ph.EXIT_OK and snapshot(root) == before
    assert "+++ b/s3prl/downstream/runner.py" in out and "+++ b/s3prl/schedulers.py" in out
    assert "+# >>> recycle-distill checkpoint allow-list >>>" in out


def test_a_module_edited_after_patching_loses_only_the_block(root, capsys):
    run(capsys, root)
    runner = root / "s3prl" / "downstream" / "runner.py"
    edited = "# a user's line\n" + runner.read_text()
    runner.write_text(edited)
    code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_WARNINGS and "removed only the block" in err
    insert = next(i for i in INSERTS if i.key == "downstream/runner.py")
    assert runner.read_text() == edited.replace("\n" + insert.block(), "")
    assert not (runner.parent / ("runner.py" + ph.BACKUP_SUFFIX)).exists()


def test_a_tree_without_the_modules_is_patched_without_blocks(tmp_path, capsys):
    dst = tmp_path / "tree"
    shutil.copytree(FIXTURE, dst, symlinks=True)
    code, out, _ = run(capsys, dst)
    assert code == ph.EXIT_OK and "Done: 10 item(s) patched" in out
    assert "skip        s3prl/schedulers.py  (not in this tree, so no tri-stage scheduler block)" in out
    assert not set(MODULES) & set(json.loads((dst / "s3prl" / ph.MANIFEST_NAME).read_text())["patched"])


# What the patched runner does: torch's weights-only loader (the default since torch 2.6) refuses
# S3PRL's states file before the runner module is imported and reads it after.
_LOAD_STATES = """
import argparse, importlib.util, pickle, sys, torch
path, runner = sys.argv[1], sys.argv[2]
torch.save({"Args": argparse.Namespace(upstream="armhubert", seed=1), "Step": 6}, path)
try:
    torch.load(path, map_location="cpu")
    print("loaded before")
except pickle.UnpicklingError:
    print("refused before")
spec = importlib.util.spec_from_file_location("patched_runner", runner)
spec.loader.exec_module(importlib.util.module_from_spec(spec))
state = torch.load(path, map_location="cpu")
print("after", state["Args"].upstream, state["Step"])
"""


def test_the_patched_runner_lets_the_default_loader_read_s3prl_states(tmp_path, capsys):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE, tree, symlinks=True)
    runner = tree / "s3prl" / "downstream" / "runner.py"
    runner.write_text("import torch\n")  # S3PRL's runner imports the world; its first line is enough here
    assert run(capsys, tree)[0] == ph.EXIT_OK
    result = subprocess.run([sys.executable, "-c", _LOAD_STATES, str(tmp_path / "states-6.ckpt"), str(runner)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.split()
    assert lines[:2] == ["refused", "before"] and lines[2:] == ["after", "armhubert", "6"]


@pytest.mark.skipif(importlib.util.find_spec(TRI_STAGE) is None, reason=f"{TRI_STAGE} is not written yet")
def test_the_patched_schedulers_module_resolves_tri_stage_schedule(root, capsys):
    import torch

    assert run(capsys, root)[0] == ph.EXIT_OK
    spec = importlib.util.spec_from_file_location("patched_schedulers", root / "s3prl" / "schedulers.py")
    schedulers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schedulers)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    # S3PRL's own get_scheduler, as the runner calls it with a config's scheduler: block.
    scheduler = schedulers.get_scheduler(optimizer, 100, {"name": "tri_stage_schedule", "warmup_steps": 10,
                                                          "hold_steps": 20, "decay_steps": 70})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # init_lr_scale * lr at step 0
    for _ in range(15):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)  # held at the peak


# ---------------------------------------------------------------- which s3prl this Python imports


def test_patching_a_tree_this_python_does_not_import_says_how_to_fix_it(root, capsys):
    code, out, _ = run(capsys, root)
    assert code == ph.EXIT_OK
    (note,) = [line for line in out.splitlines() if line.startswith("note: this Python")]
    assert f"imports s3prl from {s3prl_package_dir().resolve()}, not from the tree just patched" in note
    assert f"pip install -e {root.resolve()}" in note and f"PYTHONPATH={root.resolve()}" in note


def test_no_note_when_this_python_imports_the_patched_tree(root):
    (root / "s3prl" / "__init__.py").write_text("")  # a real checkout's package (the fixture has none)
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, str(REPO / "patch_hub.py"), str(root)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Done: 12 item(s) patched" in result.stdout and "note: this Python" not in result.stdout
