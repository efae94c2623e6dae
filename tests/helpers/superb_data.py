"""Tiny SUPERB datasets and S3PRL trees for the launcher / end-to-end tests.

- :func:`make_tiny_voxceleb1`: VoxCeleb1 SID layout (``<root>/{dev,test}/wav/id100NN/<yt>/<n>.wav``
  + ``iden_split.txt``), speech from espeak-ng (one voice per speaker) where installed; and
  :func:`make_tiny_asr`: LibriSpeech layout + S3PRL bucket CSVs + char dict. Both live in
  :mod:`recycle_distill.lab.make_data.superb` (``recycle-distill make-data`` uses them), as do
  the overrides of :func:`sid_overrides` / :func:`asr_overrides` (:mod:`recycle_distill.lab.smoke.tasks`).
- :func:`make_s3prl_checkout`: a fake S3PRL git checkout (the installed package copied to
  ``<root>/s3prl`` plus the git-only downstream configs from ``tests/data/s3prl_tree``).
- :func:`tiny_checkpoint`: a tiny student in the released Lightning format with its ``-g`` YAML.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path

from recycle_distill.lab.make_data.superb import (  # noqa: F401  (re-exported for the tests)
    ASR_SUBSETS,
    TinyAsr,
    TinyVox,
    make_tiny_asr,
    make_tiny_voxceleb1,
)
from recycle_distill.lab.smoke import tasks as smoke_tasks

from conftest import DATA, load_fixture, write_lightning_checkpoint, write_yaml

RUN_TIMEOUT = 600


def run_checked(command: list, cwd: Path, log: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """Run a command (our compat switch unset) and assert it exits 0, showing its output if not;
    its stdout also goes to ``log`` (as a user's ``| tee`` would)."""
    environment = {**os.environ, **env}
    environment.pop("RECYCLE_DISTILL_NO_COMPAT", None)
    started = time.time()
    result = subprocess.run(command, cwd=str(cwd), env=environment, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    print(f"[{time.time() - started:5.1f} s] {' '.join(map(str, command[:10]))} ...")
    if log is not None:
        log.write_text(result.stdout)
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-4000:]}\nSTDERR:\n{result.stderr[-6000:]}"
    return result

S3PRL_TREE = DATA / "s3prl_tree" / "s3prl"


def s3prl_package_dir() -> Path:
    """The installed ``s3prl`` package folder (found without importing it)."""
    spec = importlib.util.find_spec("s3prl")
    assert spec is not None and spec.submodule_search_locations, "s3prl is not installed"
    return Path(list(spec.submodule_search_locations)[0])


def voxceleb1_cache(package: Path | None = None) -> Path:
    """S3PRL's voxceleb1 file-list cache (``<s3prl>/downstream/voxceleb1/.cache``)."""
    return (package or s3prl_package_dir()) / "downstream" / "voxceleb1" / ".cache"


def make_s3prl_checkout(root: Path) -> Path:
    """A fake S3PRL git checkout at ``root``: the installed package + git-only downstream files.

    Returns ``root`` (holding ``s3prl/``). ``patch_hub.py root`` treats it as a checkout.
    """
    root = Path(root)
    package = root / "s3prl"
    shutil.copytree(s3prl_package_dir(), package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".cache"))
    # The PyPI sdist lacks every downstream config.yaml and asr/char.dict; add git's.
    shutil.copytree(S3PRL_TREE / "downstream", package / "downstream", symlinks=True, dirs_exist_ok=True)
    return root


def tiny_checkpoint(folder: Path, family: str) -> tuple[Path, Path]:
    """(released-format Lightning ckpt, -g YAML) of the tiny ``family`` test student (96-dim, 4 layers)."""
    fixture = load_fixture(f"golden_tiny_{family}.pt")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = write_lightning_checkpoint(folder / f"tiny_{family}.ckpt", fixture["state_dict"])
    config = write_yaml(folder / f"tiny_{family}.yaml", {"distiller": fixture["config"]})
    return ckpt, config


def sid_overrides(vox: TinyVox, steps: int = 4) -> str:
    """run_downstream ``-o`` for a few-step SID run on a tiny corpus (evaluates dev and test)."""
    return ",,".join(smoke_tasks.sid_overrides(vox.root, vox.meta, steps, log_step=2))


def asr_overrides(asr: TinyAsr, steps: int = 4, with_dict: bool = True) -> str:
    """run_downstream ``-o`` for a few-step ASR run (evaluates dev-clean and test-clean)."""
    items = smoke_tasks.asr_overrides(asr.libri_root, asr.bucket, steps, log_step=2)
    items.append("config.runner.eval_dataloaders=['dev-clean','test-clean']")
    if with_dict:
        items.append(f"config.downstream_expert.datarc.dict_path={asr.dict_path}")
    return ",,".join(items)
