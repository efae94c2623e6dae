"""Nothing endless, nothing overwritten (issue 20, the training items): epochs without a step,
over-long files, huge teacher configs, absurd samples, --check writing nothing, --overwrite
moving only runs, a full disk during a checkpoint write, manifests with huge counts."""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import resource
import shutil
from collections import namedtuple

import numpy as np
import pytest
import soundfile
import torch

from recycle_distill.cli import main
from recycle_distill.training.config import load_train_config
from recycle_distill.training.data import AudioDataset, ManifestError, read_len_for_bucket, read_tsv_manifest
from recycle_distill.training.data.manifest import AudioEntry
from recycle_distill.training.teacher import TeacherCheckpointError, load_teacher, read_teacher_checkpoint
from recycle_distill.training.trainer import Trainer, TrainingDiverged

from helpers.train_helpers import TEACHER, tiny_config, write_config

RATE = 16000


def _wav(path: pathlib.Path, seconds: float = 0.5, rate: int = RATE, seed: int = 0, subtype: str = "PCM_16",
         samples: np.ndarray | None = None) -> pathlib.Path:
    if samples is None:
        samples = (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def _audio_folder(folder: pathlib.Path, count: int = 4, rate: int = RATE) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        _wav(folder / f"utt{index}.wav", rate=rate, seed=index)
    return folder


def _config(tmp_path: pathlib.Path, output: pathlib.Path, data: dict, **train) -> dict:
    config = tiny_config(tmp_path, output, train={"max_steps": 2, "batch_size": 2, **train})
    config["data"] = data
    return config


def _no_endless_epochs(trainer: Trainer, limit: int = 3) -> None:
    """Make an endless loop fail the test instead of hanging it."""
    original = trainer.train_loader.set_epoch

    def set_epoch(epoch: int) -> None:
        if epoch >= limit:
            raise AssertionError(f"still looping at epoch {epoch}: the run never stops")
        original(epoch)

    trainer.train_loader.set_epoch = set_epoch


# ------------------------------------------------------------------ item 7: epochs without a step


def _all_bad(tmp_path: pathlib.Path, how: str) -> dict:
    if how == "8 kHz":
        return {"audio_dir": str(_audio_folder(tmp_path / "audio", rate=8000)), "cache_dir": str(tmp_path / "cache")}
    if how == "unreadable":
        folder = _audio_folder(tmp_path / "audio")
        manifest = tmp_path / "bad.tsv"
        for wav in folder.iterdir():
            wav.write_bytes(b"RIFF but not really a wave file" * 10)
        manifest.write_text(f"{folder}\n" + "".join(f"utt{i}.wav\t8000\n" for i in range(4)))
        return {"manifest": str(manifest)}
    manifest = tmp_path / "gone.tsv"  # a manifest whose only file is gone
    manifest.write_text(f"{tmp_path}\ngone.wav\t8000\n")
    return {"manifest": str(manifest)}


@pytest.mark.parametrize("how, counts", [("8 kHz", "4 of 4 training files were skipped when read (wrong sample "
                                                   "rate: 4)"),
                                         ("unreadable", "4 of 4 training files were skipped when read (unreadable: 4)"),
                                         ("gone", "1 of 1 training files were skipped when read (unreadable: 1)")])
def test_an_epoch_without_a_step_stops_the_run(tmp_path, how, counts):
    config = load_train_config(_config(tmp_path, tmp_path / "run", _all_bad(tmp_path, how)))
    trainer = Trainer(config)
    _no_endless_epochs(trainer)
    with pytest.raises(RuntimeError) as caught:
        trainer.fit()
    assert str(caught.value) == (f"epoch 1 made no optimizer step: {counts}, so every batch was empty; fix or remove "
                                 "those files (the warnings above name each one)")
    assert trainer.step == 0


@pytest.mark.parametrize("how, counts", [("8 kHz", "all 4 training files and every one would be skipped (wrong "
                                                   "sample rate: 4)"),
                                         ("gone", "all 1 training files and every one would be skipped (unreadable: "
                                                  "1)")])
def test_check_reads_the_files_and_refuses_when_none_is_usable(tmp_path, capsys, how, counts):
    conf = write_config(tmp_path / "conf.yaml", _config(tmp_path, tmp_path / "run", _all_bad(tmp_path, how)))
    assert main(["train", "-c", str(conf), "--check"]) == 1
    captured = capsys.readouterr()
    assert "config OK" not in captured.out
    assert captured.err.strip().splitlines()[-1] == (
        f"error: data: --check read {counts}; training would make no step: fix or remove those files (the "
        "warnings above name each one)")


# ------------------------------------------------------------------ item 8: over-long files


def test_long_files_are_cropped_by_a_default_limit_and_never_read_whole(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "audio"
    folder.mkdir()
    _wav(folder / "short.wav", seconds=1.0)
    _wav(folder / "long.wav", seconds=50.0)  # over the default limit (40 s)
    manifest = tmp_path / "m.tsv"  # the manifest understates the long file's length
    manifest.write_text(f"{folder}\nshort.wav\t16000\nlong.wav\t16000\n")
    config = load_train_config(_config(tmp_path, tmp_path / "run", {"manifest": str(manifest)}))
    assert config.train.max_audio_seconds == 40.0
    with caplog.at_level(logging.INFO):
        trainer = Trainer(config, check_only=True)
    assert ("train.max_audio_seconds: utterances longer than 40 s are read as a random 40 s window "
            "(set it to null for no limit)") in caplog.text
    asked = []
    original = soundfile.SoundFile.read

    def read(self, frames=-1, *args, **kwargs):
        asked.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(soundfile.SoundFile, "read", read)
    dataset = trainer.train_set
    index = [os.path.basename(e.path) for e in dataset.entries].index("long.wav")
    wave, _ = dataset[index]
    assert wave.shape == (40 * RATE,)
    assert asked == [40 * RATE]  # one read of the window, not of the whole file
    assert dataset.cropped == 1 and dataset.skipped == 0
    caplog.clear()
    with caplog.at_level(logging.INFO):
        dataset.log_skip_summary()
    assert "cropped 1 of 2 files longer than 40 s (train.max_audio_seconds) to a 40 s window" in caplog.text


# ------------------------------------------------------------------ item 9: huge teacher configs


class _AddressSpaceLimit:
    """Cap this process's address space a little above what it uses: a teacher built in full
    (tens of GB) fails to allocate instead of exhausting the machine."""

    def __enter__(self):
        with open("/proc/self/status") as status:
            used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        self.previous = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (used + 3 * 2**30, self.previous[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_AS, self.previous)


HUGE = {"encoder_layers": 200, "encoder_embed_dim": 4096, "encoder_ffn_embed_dim": 16384,
        "encoder_attention_heads": 16}  # ~40e9 parameters: 160 GB if built for real


@pytest.mark.parametrize("weights", ["one tensor", "one tensor per layer"])
def test_a_teacher_cfg_asking_for_a_huge_model_is_refused_before_building(tmp_path, weights):
    spec = read_teacher_checkpoint(TEACHER)
    tensors = {"mask_emb": torch.zeros(4096)}
    if weights != "one tensor":
        tensors.update({f"encoder.layers.{i}.final_layer_norm.bias": torch.zeros(4) for i in range(200)})
    path = tmp_path / "huge.pt"
    torch.save({"cfg": {"model": {**spec.model_cfg, **HUGE}, "task": dict(spec.task_cfg)}, "model": tensors}, path)
    with _AddressSpaceLimit(), pytest.raises(TeacherCheckpointError) as caught:
        load_teacher(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: the weights do not fit S3PRL's HubertModel built from its cfg; ")
    assert "\n" not in message


def test_check_refuses_a_huge_teacher_cfg_before_building(tmp_path, capsys):
    spec = read_teacher_checkpoint(TEACHER)
    path = tmp_path / "huge.pt"
    torch.save({"cfg": {"model": {**spec.model_cfg, **HUGE}, "task": dict(spec.task_cfg)},
                "model": {"mask_emb": torch.zeros(4096)}}, path)
    folder = _audio_folder(tmp_path / "audio", count=1)
    config = _config(tmp_path, tmp_path / "run", {"audio_dir": str(folder)})
    config["teacher"]["teacher_model"] = str(path)
    conf = write_config(tmp_path / "conf.yaml", config)
    with _AddressSpaceLimit():
        code = main(["train", "-c", str(conf), "--check"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {path}: the weights do not fit S3PRL's HubertModel built from its cfg; the cfg asks for 200 encoder "
        "layers (encoder_layers), the weights hold 0")
    assert not (tmp_path / "run").exists()


def test_a_hugging_face_teacher_asking_for_a_huge_model_is_refused_before_building(tmp_path):
    from safetensors.torch import save_file

    config = {"model_type": "hubert", "hidden_size": 4096, "num_hidden_layers": 200, "num_attention_heads": 16,
              "intermediate_size": 16384, "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
              "conv_stride": [5, 2, 2, 2, 2, 2, 2]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({"masked_spec_embed": torch.zeros(4096)}, str(tmp_path / "model.safetensors"))
    with _AddressSpaceLimit(), pytest.raises(TeacherCheckpointError) as caught:
        load_teacher(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: the weights do not fit S3PRL's HubertModel built from its cfg; ")


def test_a_hugging_face_config_with_an_overflowing_size_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "hubert", "hidden_size": 1e400, "num_hidden_layers": 2, '
                                          '"num_attention_heads": 2, "intermediate_size": 8, "conv_dim": [8], '
                                          '"conv_kernel": [10], "conv_stride": [5]}')
    with pytest.raises(TeacherCheckpointError) as caught:
        load_teacher(tmp_path)
    assert str(caught.value) == f"{tmp_path}: config.json: 'hidden_size' must be a whole number, got inf"


# ------------------------------------------------------------------ item 12: absurd samples, bad batches


def test_out_of_range_samples_are_skipped_and_counted(tmp_path, caplog):
    entries = []
    for name, peak in (("fine", 0.9), ("loud", 1.5), ("absurd", 1e30), ("int-scale", 32767.0)):
        samples = np.full(1600, 0.1, dtype=np.float32)
        samples[100:103] = peak
        path = _wav(tmp_path / f"{name}.wav", samples=samples, subtype="FLOAT")
        entries.append(AudioEntry(str(path), 1600, RATE, 1))
    dataset = AudioDataset(entries, random_crop=False)
    with caplog.at_level(logging.WARNING):
        kept = [dataset[i] is not None for i in range(4)]
    assert kept == [True, True, False, False]
    assert dataset.skip_summary() == {"out-of-range samples": 2}
    assert dataset.skipped_files()[str(tmp_path / "absurd.wav")] == "out-of-range samples"
    assert (f"skipping {tmp_path / 'absurd.wav'}: 3 of 1600 samples are out of range (|x| > 1000, largest 1e+30); "
            "audio lies within [-1, 1]") in caplog.text


def test_a_non_finite_loss_names_the_files_of_its_batch(tmp_path, caplog):
    folder = _audio_folder(tmp_path / "audio", count=2)
    config = load_train_config(_config(tmp_path, tmp_path / "run", {"audio_dir": str(folder),
                                                                      "cache_dir": str(tmp_path / "cache")},
                                       max_bad_steps=1))
    trainer = Trainer(config)
    _no_endless_epochs(trainer)
    training_loss = trainer.objective.training_loss

    def nan_loss(*args, **kwargs):
        result = training_loss(*args, **kwargs)
        result.total = result.total * float("nan")
        return result

    trainer.objective.training_loss = nan_loss
    with caplog.at_level(logging.WARNING), pytest.raises(TrainingDiverged) as caught:
        trainer.fit()
    files = f"{folder / 'utt0.wav'}, {folder / 'utt1.wav'}"
    assert str(caught.value) == (
        f"stopped at step 1: 1 optimizer steps in a row had a non-finite loss or gradient; the last one's batch: "
        f"{files}; check those files, lower optimizer.lr, or raise train.max_bad_steps (the last checkpoint is in "
        f"{tmp_path / 'run' / 'checkpoints'})")
    assert f"optimizer step skipped (1 in a row, stopping at 1); its batch: {files}" in caplog.text


# ------------------------------------------------------------------ item 16: --check writes nothing


def test_check_writes_nothing_so_the_same_train_command_then_runs(tmp_path, capsys):
    folder = _audio_folder(tmp_path / "audio")
    output = tmp_path / "run"
    conf = write_config(tmp_path / "conf.yaml", _config(tmp_path, output, {"audio_dir": str(folder)}, max_steps=1))
    assert main(["train", "-c", str(conf), "--check"]) == 0
    assert "config OK" in capsys.readouterr().out
    assert not output.exists()  # not even output_dir/manifests
    assert main(["train", "-c", str(conf)]) == 0, capsys.readouterr().err[-2000:]
    assert (output / "student.safetensors").is_file()


# ------------------------------------------------------------------ item 20: --overwrite moves only runs


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')\n")
    (project / "config.json").write_text('{"name": "my project"}')
    args = ["train", "-c", "maskhubert-960", f"train.output_dir={project}", "teacher.teacher_model=/missing/t.pt",
            f"data.audio_dir={tmp_path / 'audio'}", "--overwrite"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: train.output_dir: {project} is not a training run (it holds config.json, src; not from a run: "
        "config.json, src); --overwrite only moves aside a folder this trainer wrote: choose another output_dir or "
        "move it yourself")
    assert (project / "src" / "main.py").read_text() == "print('mine')\n"
    assert not (tmp_path / "project.old-1").exists()


def test_overwrite_still_moves_a_run_aside(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-00000002.pt").write_bytes(b"x")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"x")
    (run / "config.json").write_text(json.dumps(load_train_config("maskhubert-960", [
        "teacher.teacher_model=t.pt", "data.audio_dir=/a"]).to_dict()))
    args = ["train", "-c", "maskhubert-960", f"train.output_dir={run}", "teacher.teacher_model=/missing/t.pt",
            f"data.audio_dir={tmp_path / 'audio'}", "--overwrite"]
    assert main(args) == 1  # moved aside, then stops at the missing teacher
    assert f"moved the previous run in {run} to {run}.old-1" in capsys.readouterr().err
    assert (tmp_path / "run.old-1" / "checkpoints" / "step-00000002.pt").is_file()


# ------------------------------------------------------------------ item 17: full disk, huge counts


def _fake_full_disk(monkeypatch):
    """torch.save on a full disk: a path gives the C++ writer's enforce error, a file object ENOSPC."""
    def save(obj, target, *args, **kwargs):
        if isinstance(target, (str, os.PathLike)):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 704 vs 598")
        target.write(b"PK\x03\x04")
        raise OSError(errno.ENOSPC, "No space left on device")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))


def test_a_full_disk_during_a_checkpoint_write_is_one_line(tmp_path, monkeypatch, capsys):
    folder = _audio_folder(tmp_path / "audio", count=2)
    output = tmp_path / "run"
    conf = write_config(tmp_path / "conf.yaml", _config(tmp_path, output, {"audio_dir": str(folder),
                                                                             "cache_dir": str(tmp_path / "cache")},
                                                        max_steps=1))
    _fake_full_disk(monkeypatch)
    assert main(["train", "-c", str(conf)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    checkpoint = output / "checkpoints" / "step-00000001.pt"
    mount = pathlib.Path(output)
    while not os.path.ismount(mount):
        mount = mount.parent
    assert err == (f"error: could not write {checkpoint}: no space left on the disk at {mount} (1.0 MiB free); "
                   "free some space, then resume with train.checkpoint=last (earlier checkpoints are intact)")
    assert "inline_container" not in err
    assert not list((output / "checkpoints").iterdir())  # no half-written file left


def test_a_tsv_manifest_with_a_huge_count_is_one_line(tmp_path, capsys):
    _audio_folder(tmp_path / "audio", count=1)
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"{tmp_path / 'audio'}\nutt0.wav\t99999999999999999999999999\n")
    with pytest.raises(ManifestError) as caught:
        read_tsv_manifest(manifest)
    assert str(caught.value) == (f"{manifest}:2: num_samples must be a whole number from 0 to 1099511627776, "
                                 "got '99999999999999999999999999'")
    conf = write_config(tmp_path / "conf.yaml", _config(tmp_path, tmp_path / "run", {"manifest": str(manifest)}))
    assert main(["train", "-c", str(conf), "--check"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {caught.value}"


@pytest.mark.parametrize("length", ["1e400", "nan", "-5", "12abc", ""])
def test_a_len_for_bucket_csv_with_a_huge_or_bad_length_is_one_line(tmp_path, length):
    (tmp_path / "train-clean-100.csv").write_text(f",file_path,length,label\n0,a/b.flac,16000,\n1,a/c.flac,{length},\n")
    with pytest.raises(ManifestError) as caught:
        read_len_for_bucket(tmp_path, ["train-clean-100"], tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'train-clean-100.csv'}:3: length must be a whole number from 0 to "
                                 f"1099511627776, got {length!r}")
