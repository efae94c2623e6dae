"""Tiny SUPERB datasets and S3PRL trees for the launcher / end-to-end tests.

- :func:`make_tiny_voxceleb1`: VoxCeleb1 SID layout (``<root>/{dev,test}/wav/id100NN/<yt>/<n>.wav``
  + ``iden_split.txt``), speech from espeak-ng (one voice per speaker) where installed.
- :func:`make_tiny_asr`: LibriSpeech layout + S3PRL bucket CSVs + char dict.
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
from dataclasses import dataclass
from pathlib import Path

import soundfile

from recycle_distill.training.data.synth import TinyCorpusInfo, make_len_for_bucket, make_tiny_librispeech

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
CHAR_DICT = Path(__file__).resolve().parents[2] / "recycle_distill" / "s3prl" / "downstream_configs" / "asr_char.dict"
ASR_SUBSETS = ("train-clean-100", "dev-clean", "test-clean")


def s3prl_package_dir() -> Path:
    """The installed ``s3prl`` package folder (found without importing it)."""
    spec = importlib.util.find_spec("s3prl")
    assert spec is not None and spec.submodule_search_locations, "s3prl is not installed"
    return Path(list(spec.submodule_search_locations)[0])


def voxceleb1_cache(package: Path | None = None) -> Path:
    """S3PRL's voxceleb1 file-list cache (``<s3prl>/downstream/voxceleb1/.cache``)."""
    return (package or s3prl_package_dir()) / "downstream" / "voxceleb1" / ".cache"


@dataclass
class TinyVox:
    """A tiny VoxCeleb1 SID corpus: ``root`` (``file_path``) and ``meta`` (``iden_split.txt``)."""

    root: Path
    meta: Path
    corpus_source: str
    speakers: int


def make_tiny_voxceleb1(root: Path, speakers: int = 2, train_per_speaker: int = 2, seed: int = 0) -> TinyVox:
    """Write a VoxCeleb1 SID corpus: per speaker ``train_per_speaker`` train, 1 dev, 1 test utterance.

    Split 1/2/3 = train/dev/test as in ``iden_split.txt``; the test utterances sit under
    ``test/wav`` and the rest under ``dev/wav``, as in VoxCeleb1.
    """
    root = Path(root)
    per_speaker = train_per_speaker + 2
    source = make_tiny_librispeech(root / "_speech", speakers=speakers, utterances_per_speaker=per_speaker,
                                   seed=seed, min_words=2, max_words=4)
    by_speaker: dict[str, list[str]] = {}
    for uid in source.subsets["train-clean-100"]:
        by_speaker.setdefault(uid.split("-")[0], []).append(uid)
    lines = []
    for number, (speaker, uids) in enumerate(sorted(by_speaker.items())):
        vox_id = f"id{10001 + number}"
        for index, uid in enumerate(sorted(uids)):
            split = 1 if index < train_per_speaker else (2 if index == train_per_speaker else 3)
            rel = f"{vox_id}/yt{number}{index % 2}/{index + 1:05d}.wav"
            target = root / ("test" if split == 3 else "dev") / "wav" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            flac = next((root / "_speech").rglob(f"{uid}.flac"))
            samples, rate = soundfile.read(str(flac), dtype="float32")
            soundfile.write(str(target), samples, rate, subtype="PCM_16")
            lines.append(f"{split} {rel}\n")
    shutil.rmtree(root / "_speech")
    meta = root / "iden_split.txt"
    meta.write_text("".join(lines))
    return TinyVox(root.resolve(), meta.resolve(), source.corpus_source, speakers)


@dataclass
class TinyAsr:
    """A tiny LibriSpeech ASR corpus: ``libri_root``, ``bucket`` (CSV folder), ``dict_path``."""

    libri_root: Path
    bucket: Path
    dict_path: Path
    info: TinyCorpusInfo


def make_tiny_asr(root: Path, utterances: int = 4, seed: int = 1) -> TinyAsr:
    """One speaker with ``utterances`` sentences in each of train-clean-100, dev-clean, test-clean."""
    root = Path(root)
    info = make_tiny_librispeech(root / "LibriSpeech", speakers=1, utterances_per_speaker=utterances,
                                 seed=seed, subsets=ASR_SUBSETS, min_words=2, max_words=4)
    bucket = root / "len_for_bucket"
    make_len_for_bucket(info.root, ASR_SUBSETS, bucket)
    dict_path = bucket / "char.dict"
    shutil.copyfile(CHAR_DICT, dict_path)
    return TinyAsr(info.root, bucket.resolve(), dict_path.resolve(), info)


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
    return ",,".join([
        f"config.runner.total_steps={steps}", "config.runner.log_step=2", f"config.runner.eval_step={steps}",
        f"config.runner.save_step={steps}", "config.runner.gradient_accumulate_steps=1",
        f"config.downstream_expert.datarc.file_path={vox.root}",
        f"config.downstream_expert.datarc.meta_data={vox.meta}",
        "config.downstream_expert.datarc.num_workers=0", "config.downstream_expert.datarc.train_batch_size=2",
        "config.downstream_expert.datarc.max_timestep=16000", "config.downstream_expert.modelrc.projector_dim=16",
    ])


def asr_overrides(asr: TinyAsr, steps: int = 4, with_dict: bool = True) -> str:
    """run_downstream ``-o`` for a few-step ASR run (evaluates dev-clean and test-clean)."""
    items = [
        f"config.runner.total_steps={steps}", "config.runner.log_step=2", f"config.runner.eval_step={steps}",
        f"config.runner.save_step={steps}", "config.runner.eval_dataloaders=['dev-clean','test-clean']",
        f"config.downstream_expert.datarc.libri_root={asr.libri_root}",
        f"config.downstream_expert.datarc.bucket_file={asr.bucket}",
        "config.downstream_expert.datarc.num_workers=0", "config.downstream_expert.datarc.batch_size=2",
        "config.downstream_expert.datarc.train_batch_size=2", "config.downstream_expert.datarc.eval_batch_size=1",
        "config.downstream_expert.modelrc.project_dim=16", "config.downstream_expert.modelrc.RNNs.dim=[16,16]",
    ]
    if with_dict:
        items.append(f"config.downstream_expert.datarc.dict_path={asr.dict_path}")
    return ",,".join(items)
