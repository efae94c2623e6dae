"""The SUPERB tasks the smoke test runs on a make-data folder, and the overrides that make each
run tiny: a few steps, one evaluation on dev at the end, small heads, no worker processes.

PR (``-d ctc`` with ``ctc_libriphone.yaml``) is not among them: the PyPI s3prl lacks
``downstream/ctc/corpus/`` and the lexicons, so it runs only in an S3PRL git checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

__all__ = ["SmokeTask", "TASKS", "runner_overrides", "ks_overrides", "sid_overrides", "asr_overrides"]

PathLike = Union[str, "os.PathLike[str]"]
EXPERT = "config.downstream_expert"


def runner_overrides(steps: int, log_step: int = 1) -> list[str]:
    """Train ``steps`` steps (one per batch), log every ``log_step``, evaluate and save at the end."""
    return [f"config.runner.total_steps={steps}", f"config.runner.log_step={log_step}",
            f"config.runner.eval_step={steps}", f"config.runner.save_step={steps}",
            "config.runner.gradient_accumulate_steps=1"]


def ks_overrides(train: PathLike, test: PathLike, steps: int) -> list[str]:
    """Speech Commands (``-d speech_commands``): ``train`` and ``test`` as make-data writes them."""
    return runner_overrides(steps) + [
        "config.runner.eval_dataloaders=['dev']", "config.scheduler.num_warmup_steps=1",
        f"{EXPERT}.datarc.speech_commands_root={train}", f"{EXPERT}.datarc.speech_commands_test_root={test}",
        f"{EXPERT}.datarc.num_workers=0", f"{EXPERT}.datarc.batch_size=4", f"{EXPERT}.modelrc.projector_dim=16",
    ]


def sid_overrides(root: PathLike, meta: PathLike, steps: int, log_step: int = 1) -> list[str]:
    """VoxCeleb1 SID (``-d voxceleb1``): ``root`` (``file_path``) and ``meta`` (``iden_split.txt``)."""
    return runner_overrides(steps, log_step) + [
        f"{EXPERT}.datarc.file_path={root}", f"{EXPERT}.datarc.meta_data={meta}",
        f"{EXPERT}.datarc.num_workers=0", f"{EXPERT}.datarc.train_batch_size=2",
        f"{EXPERT}.datarc.max_timestep=16000", f"{EXPERT}.modelrc.projector_dim=16",
    ]


def asr_overrides(libri_root: PathLike, bucket: PathLike, steps: int, log_step: int = 1) -> list[str]:
    """LibriSpeech ASR (``-d asr``): ``libri_root`` and the ``len_for_bucket`` folder ``bucket``."""
    return runner_overrides(steps, log_step) + [
        f"{EXPERT}.datarc.libri_root={libri_root}", f"{EXPERT}.datarc.bucket_file={bucket}",
        f"{EXPERT}.datarc.num_workers=0", f"{EXPERT}.datarc.batch_size=2",
        f"{EXPERT}.datarc.train_batch_size=2", f"{EXPERT}.datarc.eval_batch_size=1",
        f"{EXPERT}.modelrc.project_dim=16", f"{EXPERT}.modelrc.RNNs.dim=[16,16]",
    ]


@dataclass(frozen=True)
class SmokeTask:
    """One SUPERB task of the smoke test.

    Attributes:
        name: the SUPERB name (``KS``).
        downstream: S3PRL's ``-d``.
        needs: the entries of the make-data folder it reads.
        loss_tag: the TensorBoard scalar of the training loss.
        dev_split, metric: the dev result read from the logs (``dev`` / ``acc``).
        overrides: ``(data folder, steps) -> -o items``.
    """

    name: str
    downstream: str
    needs: tuple[str, ...]
    loss_tag: str
    dev_split: str
    metric: str
    overrides: Callable[[Path, int], list[str]]


TASKS = {
    "KS": SmokeTask("KS", "speech_commands", ("speech_commands/train", "speech_commands/test"),
                    "speech_commands/train-loss", "dev", "acc",
                    lambda data, steps: ks_overrides(data / "speech_commands/train", data / "speech_commands/test",
                                                     steps)),
    "SID": SmokeTask("SID", "voxceleb1", ("VoxCeleb1", "VoxCeleb1/iden_split.txt"), "voxceleb1/train-loss",
                     "dev", "acc",
                     lambda data, steps: sid_overrides(data / "VoxCeleb1", data / "VoxCeleb1/iden_split.txt", steps)
                     + ["config.runner.eval_dataloaders=['dev']", "config.scheduler.num_warmup_steps=1"]),
    "ASR": SmokeTask("ASR", "asr", ("LibriSpeech", "len_for_bucket/char.dict"), "asr/train-loss", "dev-clean", "wer",
                     lambda data, steps: asr_overrides(data / "LibriSpeech", data / "len_for_bucket", steps)
                     + [f"{EXPERT}.datarc.dict_path={data / 'len_for_bucket/char.dict'}",
                        "config.scheduler.num_warmup_steps=1"]),
}
