"""Trainer guards (issue 11): numeric key ranges, non-finite steps skipped, no NaN export."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import soundfile
import torch

from recycle_distill.students.config import ConfigError
from recycle_distill.training.data import AudioDataset
from recycle_distill.training.data.manifest import AudioEntry
from recycle_distill.training.config import OptimizerSection, TrainSection, load_train_config
from recycle_distill.training.distributed import DistributedContext
from recycle_distill.training.optim import build_optimizer
from recycle_distill.training.state import NonFiniteWeightsError, export_student
from recycle_distill.training.trainer import Trainer, TrainingDiverged

BASE = ["teacher.teacher_model=teacher.pt", "data.audio_dir=/nonexistent"]


# ------------------------------------------------------------------ bug 8: ranges


@pytest.mark.parametrize("override, message", [
    ("train.max_steps=-1", "train.max_steps: must be in [0, inf), got -1"),
    ("train.log_every_steps=0", "train.log_every_steps: must be in [1, inf), got 0"),
    ("train.max_audio_seconds=0.001", "train.max_audio_seconds: 0.001 s is shorter than one student frame "
                                      "(400 samples = 0.025 s at 16000 Hz)"),
    ("train.max_audio_seconds=-3", "train.max_audio_seconds: must be in (0, inf), got -3"),
    ("teacher.mask_prob=5", "teacher.mask_prob: must be in [0, 1], got 5"),
    ("train.keep_last=-1", "train.keep_last: must be in [1, inf), got -1"),
    ("train.val_every_steps=-1", "train.val_every_steps: must be in [0, inf), got -1"),
    ("train.save_every_steps=-5", "train.save_every_steps: must be in [0, inf), got -5"),
    ("train.num_workers=-1", "train.num_workers: must be in [0, inf), got -1"),
    ("train.gradient_clip=.nan", "train.gradient_clip: must be a finite number, got nan"),
    ("train.gradient_clip=nan", "train.gradient_clip: must be a finite number, got nan"),
    ("optimizer.lr=.inf", "optimizer.lr: must be a finite number, got inf"),
    ("optimizer.lr=0", "optimizer.lr: must be in (0, inf), got 0"),
    ("optimizer.eps=-1e-8", "optimizer.eps: must be in (0, inf), got -1e-08"),
    ("optimizer.betas=[0.9, 1.5]", "optimizer.betas: must be two numbers in [0, 1), got [0.9, 1.5]"),
    ("train.max_bad_steps=0", "train.max_bad_steps: must be in [1, inf), got 0"),
    ("teacher.mask_length=0", "teacher.mask_length: must be in [1, inf), got 0"),
])
def test_every_numeric_key_is_range_checked_when_loading(override, message):
    with pytest.raises(ConfigError) as caught:
        load_train_config("maskhubert-960", [*BASE, override])
    assert str(caught.value) == message


def test_check_refuses_before_loading_anything(tmp_path, capsys):
    """--check stops at the config: no teacher file, no data folder needed to see the error."""
    from recycle_distill.cli import main

    code = main(["train", "-c", "maskhubert-960", "--check", *BASE, "train.log_every_steps=0"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip() == "error: train.log_every_steps: must be in [1, inf), got 0"
    assert captured.out == ""


def test_valid_edges_are_accepted():
    config = load_train_config("maskhubert-960", [*BASE, "teacher.mask_prob=1", "train.max_steps=0",
                                                  "train.val_every_steps=0", "train.gradient_clip=0",
                                                  "train.max_audio_seconds=0.025"])
    assert config.teacher.mask_prob == 1.0 and config.train.max_audio_seconds == 0.025


# ------------------------------------------------------------------ bug 3: non-finite audio


def test_audio_with_nan_samples_is_skipped_and_counted(tmp_path):
    entries = []
    for name, fill in (("good", 0.1), ("nan", math.nan), ("inf", math.inf)):
        samples = np.full(1600, 0.1, dtype=np.float32)
        samples[100:110] = fill
        path = tmp_path / f"{name}.wav"
        soundfile.write(path, samples, 16000, subtype="FLOAT")
        entries.append(AudioEntry(str(path), 1600, 16000, 1))
    dataset = AudioDataset(entries, random_crop=False)
    assert dataset[0][0].shape == (1600,)
    assert dataset[1] is None and dataset[2] is None
    assert dataset.skipped == 2
    assert dataset.skip_summary() == {"non-finite samples": 2}
    assert dataset.skipped_files()[str(tmp_path / "nan.wav")] == "non-finite samples"


# ------------------------------------------------------------------ bug 3: non-finite steps


def _bare_trainer(tmp_path, max_bad_steps: int = 3, gradient_clip: float = 10.0) -> Trainer:
    """A Trainer with just what _optimizer_step needs (no teacher, no data)."""
    torch.manual_seed(0)
    trainer = Trainer.__new__(Trainer)
    student = torch.nn.Linear(4, 3)
    optimizer, scheduler = build_optimizer(student.parameters(), OptimizerSection(lr=1e-2, warmup_proportion=0.0), 10)
    trainer.config = types.SimpleNamespace(train=TrainSection(max_bad_steps=max_bad_steps, gradient_clip=gradient_clip))
    trainer.student = trainer.model = student
    trainer.optimizer, trainer.scheduler = optimizer, scheduler
    trainer.scaler = torch.amp.GradScaler("cuda", enabled=False)
    trainer.dist = DistributedContext(0, 1, 0, torch.device("cpu"))
    trainer.step = trainer.epoch = 0
    trainer.bad_steps = trainer.skipped_steps = 0
    trainer.writer = None
    trainer.output_dir = str(tmp_path)
    trainer.checkpoint_dir = str(tmp_path / "checkpoints")
    trainer.train_set = types.SimpleNamespace(skipped=0)
    return trainer


def _step(trainer: Trainer, scale: float) -> float:
    loss = (trainer.student(torch.ones(2, 4)) * scale).sum()
    loss.backward()
    progress = types.SimpleNamespace(update=lambda n: None, set_postfix=lambda **k: None)
    window = {"loss": 0.0, "utterances": 0, "started": 0.0}
    return trainer._optimizer_step({"loss": loss.detach()}, progress, window)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("clip", [10.0, 0.0])
def test_non_finite_step_is_skipped_without_moving_optimizer_or_schedule(tmp_path, bad, clip):
    trainer = _bare_trainer(tmp_path, gradient_clip=clip)
    before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    lr_before = trainer.scheduler.get_last_lr()
    loss = _step(trainer, bad)
    assert not math.isfinite(loss)
    assert trainer.step == 0 and trainer.bad_steps == 1 and trainer.skipped_steps == 1
    assert trainer.scheduler.last_epoch == 0 and trainer.scheduler.get_last_lr() == lr_before
    assert not trainer.optimizer.state  # AdamW never stepped: no moments with NaN in them
    for key, value in trainer.student.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in trainer.student.parameters())
    # A good step afterwards trains normally and resets the run of bad steps.
    assert math.isfinite(_step(trainer, 1.0))
    assert trainer.step == 1 and trainer.bad_steps == 0 and trainer.scheduler.last_epoch == 1
    assert all(torch.isfinite(p).all() for p in trainer.student.parameters())


def test_too_many_bad_steps_in_a_row_stop_the_run(tmp_path):
    trainer = _bare_trainer(tmp_path, max_bad_steps=3)
    _step(trainer, math.nan)
    _step(trainer, 1.0)  # resets the count
    _step(trainer, math.nan)
    _step(trainer, math.nan)
    with pytest.raises(TrainingDiverged, match=r"^stopped at step 2: 3 optimizer steps in a row had a non-finite"):
        _step(trainer, math.nan)


def test_export_never_writes_non_finite_weights(tmp_path):
    from recycle_distill import build_student

    model = build_student("armhubert_s")
    with torch.no_grad():
        model.encoder.layers[0].fc1.weight[0, 0] = math.nan
    path = tmp_path / "student.safetensors"
    with pytest.raises(NonFiniteWeightsError, match="first: encoder.layers.0.fc1.weight"):
        export_student(str(path), model, "armhubert", False)
    assert not path.exists()


@pytest.mark.slow
def test_a_nan_audio_file_does_not_ruin_a_run(tmp_path):
    """End to end: the NaN file is skipped and counted, losses and the export stay finite."""
    import shutil

    from safetensors.torch import load_file

    from recycle_distill.training.data.synth import make_tiny_librispeech
    from helpers.train_helpers import metrics, run_cli, tiny_config, write_config

    corpus = tmp_path / "LibriSpeech"
    make_tiny_librispeech(corpus, speakers=2, utterances_per_speaker=4, subsets=("train-clean-100",))
    audio = tmp_path / "audio"
    audio.mkdir()
    for index, flac in enumerate(sorted((corpus / "train-clean-100").rglob("*.flac"))):
        shutil.copy(flac, audio / f"{index:02d}.flac")
    soundfile.write(audio / "00-nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    output = tmp_path / "run"
    config = tiny_config(corpus, output, train={"max_steps": 3, "batch_size": 4})
    config["data"] = {"audio_dir": str(audio), "cache_dir": str(tmp_path / "cache")}
    result = run_cli(["-c", str(write_config(tmp_path / "conf.yaml", config))])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "00-nan.wav: 16000 of 16000 samples are NaN or infinite" in result.stderr
    assert "'non-finite samples': 1" in result.stderr
    assert all(math.isfinite(record["loss"]) for record in metrics(output))
    assert all(torch.isfinite(value).all() for value in load_file(str(output / "student.safetensors")).values())


# ------------------------------------------------------------------ output_dir (weak point)


def test_a_new_run_into_a_used_output_dir_is_refused_or_moved_aside(tmp_path, capsys):
    from recycle_distill.cli import main

    output = tmp_path / "run"
    (output / "checkpoints").mkdir(parents=True)
    (output / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    args = ["train", "-c", "maskhubert-960", f"train.output_dir={output}", "teacher.teacher_model=/missing/teacher.pt",
            f"data.audio_dir={tmp_path / 'audio'}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: train.output_dir: {output} already holds a run (checkpoints, metrics.jsonl); resume it "
                   "with train.checkpoint=last, choose another output_dir, or pass --overwrite to move it aside")
    assert (output / "metrics.jsonl").exists()
    # --overwrite moves the old run aside (never deletes it), then the run goes on (and here
    # stops at the missing teacher).
    assert main([*args, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert f"moved the previous run in {output} to {output}.old-1" in err
    assert (tmp_path / "run.old-1" / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'
    assert not (output / "metrics.jsonl").exists()


@pytest.mark.slow
def test_check_writes_nothing(tmp_path):
    from recycle_distill.training.data.synth import make_tiny_librispeech
    from helpers.train_helpers import run_cli, tiny_config, write_config

    corpus = tmp_path / "LibriSpeech"
    make_tiny_librispeech(corpus, speakers=2, utterances_per_speaker=2, subsets=("train-clean-100", "dev-clean"))
    output = tmp_path / "run"
    output.mkdir()
    (output / "config.json").write_text("{}")  # an earlier run's; --check must not overwrite it
    config = tiny_config(corpus, output)
    config["data"]["cache_dir"] = str(tmp_path / "cache")
    result = run_cli(["-c", str(write_config(tmp_path / "conf.yaml", config)), "--check"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "config OK" in result.stdout
    assert sorted(p.name for p in output.iterdir()) == ["config.json"]
    assert (output / "config.json").read_text() == "{}"
