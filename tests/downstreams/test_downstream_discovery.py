"""Downstreams are discovered, not named: a second (toy) downstream folder reaches S3PRL through the
launcher and patch_hub.py with no edit to either (recycle_distill.downstreams.available)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import recycle_distill.downstreams as downstreams
from recycle_distill.cli.patch_hub import main as patch_hub_main
from recycle_distill.s3prl import patch as ph
from recycle_distill.s3prl.superb import launcher

REPO = Path(__file__).resolve().parents[2]
S3PRL_TREE = REPO / "tests" / "data" / "s3prl_tree"
TOY = "toy_downstream"
TOY_EXPERT = f"from recycle_distill.downstreams.{TOY}.expert import DownstreamExpert  # noqa: F401\n"


def _package(folder: Path, expert: bool = True, init: bool = True) -> None:
    folder.mkdir(parents=True)
    if init:
        (folder / "__init__.py").write_text('"""A toy downstream for the discovery tests."""\n')
    if expert:
        (folder / "expert.py").write_text("class DownstreamExpert:\n    toy = True\n")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A second downstream, ``toy_downstream``, in a folder added to the package's path, next to
    folders that are not downstreams. Its modules are forgotten afterwards."""
    root = tmp_path / "more_downstreams"
    _package(root / TOY)
    _package(root / "no_expert", expert=False)
    _package(root / "no_init", init=False)
    _package(root / "_private")
    _package(root / "not-an-identifier")
    monkeypatch.setattr(downstreams, "__path__", [*downstreams.__path__, str(root)])
    yield TOY
    for name in [name for name in sys.modules if TOY in name]:
        del sys.modules[name]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: symlink target, or file bytes and mode, or 'dir'."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


def run(capsys, *args) -> tuple[int, str, str]:
    code = patch_hub_main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- discovery


def test_the_shipped_downstream_is_found():
    assert downstreams.available() == ["cif_asr"]


def test_only_subpackages_with_an_expert_count(toy):
    assert downstreams.available() == ["cif_asr", TOY]


def test_discovery_imports_nothing_and_needs_no_torch():
    code = ("import sys; import recycle_distill.downstreams as d; names = d.available(); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert not [m for m in sys.modules if m.startswith('recycle_distill.downstreams.')]; print(names)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['cif_asr']"


# ---------------------------------------------------------------- the launcher


def test_the_launcher_registers_a_new_downstream_as_s3prl_downstream(toy):
    try:
        assert launcher.register_downstreams() == ["cif_asr", TOY]
        expert = importlib.import_module(f"s3prl.downstream.{TOY}.expert")
        assert expert is sys.modules[f"recycle_distill.downstreams.{TOY}.expert"]
        assert expert.DownstreamExpert.toy is True
        assert sys.modules[f"s3prl.downstream.{TOY}"] is sys.modules[f"recycle_distill.downstreams.{TOY}"]
        # cif_asr keeps its registration.
        cif = importlib.import_module("s3prl.downstream.cif_asr.expert")
        assert cif is importlib.import_module("recycle_distill.downstreams.cif_asr.expert")
    finally:
        for name in [name for name in sys.modules if name.startswith(f"s3prl.downstream.{TOY}")]:
            del sys.modules[name]


# ---------------------------------------------------------------- patch_hub.py


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A fresh copy of the S3PRL fixture tree (a git checkout layout)."""
    dst = tmp_path / "s3prl_checkout"
    shutil.copytree(S3PRL_TREE, dst, symlinks=True)
    return dst


def test_patch_hub_creates_and_reverts_the_shim_of_a_new_downstream(toy, checkout, capsys):
    before = snapshot(checkout)
    code, out, _ = run(capsys, "--dry-run", checkout)
    assert code == 0 and snapshot(checkout) == before
    assert f"+++ b/s3prl/downstream/{TOY}/expert.py\n" in out and f"+{TOY_EXPERT}" in out

    code, out, _ = run(capsys, checkout)
    assert code == 0 and "Done: 11 item(s) patched" in out  # 9 + the cif_asr shim + the toy shim
    assert f"register    s3prl/downstream/{TOY}" in out and "register    s3prl/downstream/cif_asr" in out
    shim = checkout / "s3prl" / "downstream" / TOY
    assert sorted(path.name for path in shim.iterdir()) == ["__init__.py", "expert.py"]
    assert (shim / "expert.py").read_text() == TOY_EXPERT
    manifest = json.loads((checkout / "s3prl" / ph.MANIFEST_NAME).read_text())
    assert sorted(manifest["created"]) == ["downstream/cif_asr", f"downstream/{TOY}"]

    code, out, _ = run(capsys, checkout)
    assert code == 0 and f"{TOY} downstream already registered" in out

    code, out, _ = run(capsys, "--revert", checkout)
    assert code == 0 and f"remove      s3prl/downstream/{TOY}" in out
    assert "Done: 11 item(s) reverted." in out
    assert snapshot(checkout) == before


def test_an_edited_shim_of_a_new_downstream_is_kept_by_revert(toy, checkout, capsys):
    run(capsys, checkout)
    expert = checkout / "s3prl" / "downstream" / TOY / "expert.py"
    expert.write_text(TOY_EXPERT + "# edited\n")
    code, _, err = run(capsys, "--revert", checkout)
    assert code == 1 and f"{TOY}: changed since patch_hub.py created it; left alone" in err
    assert expert.read_text() == TOY_EXPERT + "# edited\n"
    assert not (checkout / "s3prl" / "downstream" / "cif_asr").exists()


def test_an_installed_s3prl_gets_a_hint_per_downstream(toy, tmp_path, capsys):
    package = tmp_path / "site-packages" / "s3prl"
    (package / "downstream").mkdir(parents=True)
    (package / "hub.py").write_text("")
    code, out, _ = run(capsys, package)
    assert code == 0 and not (package / "downstream" / TOY).exists()
    assert "run it with: recycle-distill superb -d cif_asr" in out
    assert f"run it with: recycle-distill superb -d {TOY}" in out


def test_a_manifest_naming_a_folder_that_is_no_downstream_is_ignored(checkout, capsys):
    """Only our downstreams' shims may be removed: S3PRL's own downstream folders never."""
    asr = checkout / "s3prl" / "downstream" / "asr"
    hashes = ph.tree_hashes(asr)
    run(capsys, checkout)
    path = checkout / "s3prl" / ph.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["created"]["downstream/asr"] = hashes
    path.write_text(json.dumps(manifest))
    code, _, err = run(capsys, "--revert", checkout)
    assert code == 1 and "names 'downstream/asr', which patch_hub.py never writes; ignored" in err
    assert ph.tree_hashes(asr) == hashes
