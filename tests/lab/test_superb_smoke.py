"""`recycle-distill superb-smoke`: a few SUPERB tasks for a few steps on make-data corpora, one table.

The fast tests read rows back from files written the way S3PRL writes them (TensorBoard scalars
with tensorboardX, ``log.log`` lines) and check the refusals; the slow one runs the command on
the tiny test student and checks the table against what the runs left in their expdirs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from recycle_distill.cli import main as cli_main
from recycle_distill.lab.smoke import TASKS, format_table, run_smoke
from recycle_distill.lab.smoke.child import apply_effects_without_sox
from recycle_distill.lab.smoke.events import read_scalars
from recycle_distill.lab.smoke.run import read_row
from recycle_distill.training.data.synth import espeak_available
from recycle_distill.util.atomic import OutputError

REPO = Path(__file__).resolve().parents[2]


def _write_run(expdir: Path, tag: str, losses: list[float], log_lines: list[str]) -> None:
    """An expdir as S3PRL's runner leaves it: tensorboardX scalars and log.log."""
    from tensorboardX import SummaryWriter

    expdir.mkdir(parents=True)
    writer = SummaryWriter(str(expdir))
    for step, loss in enumerate(losses, 1):
        writer.add_scalar(tag, loss, global_step=step)
        writer.add_scalar("speech_commands/train-acc", 0.5, global_step=step)  # another tag: ignored
    writer.close()
    (expdir / "log.log").write_text("".join(f"{line}\n" for line in log_lines))


def test_a_row_reads_the_loss_and_dev_metric_back(tmp_path):
    expdir = tmp_path / "KS"
    _write_run(expdir, "speech_commands/train-loss", [2.5, 2.0, 1.5, 1.25],
               ["train at step 4: 0.25", "dev at step 4: 0.375", "New best on dev at step 4: 0.375"])
    assert read_scalars(expdir, "speech_commands/train-loss") == [(1, 2.5), (2, 2.0), (3, 1.5), (4, 1.25)]
    row = read_row(TASKS["KS"], expdir, 12.34, 0, "")
    assert (row.steps, row.loss_first, row.loss_last, row.metric, row.dev, row.ok) == (4, 2.5, 1.25, "acc", 0.375, True)
    header, line = format_table([row]).splitlines()
    assert header.split() == ["task", "steps", "train", "loss", "first", "->", "last", "dev", "metric", "time", "result"]
    assert line.split() == ["KS", "4", "2.5", "->", "1.25", "acc", "0.375", "12.3", "s", "ok"]


def test_a_failed_run_names_the_error_line_not_the_progress_bar(tmp_path):
    expdir = tmp_path / "KS"
    _write_run(expdir, "speech_commands/train-loss", [], [])
    stderr = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
              "OSError: libsox.so: cannot open shared object file\noverall:   0%|          | 0/4 [00:00<?, ?it/s]\n")
    row = read_row(TASKS["KS"], expdir, 3.0, 1, stderr)
    assert not row.ok and row.reason == "exit 1: OSError: libsox.so: cannot open shared object file"
    assert format_table([row]).splitlines()[1].endswith("failed: exit 1: OSError: libsox.so: cannot open shared object file")


def test_a_run_without_a_dev_metric_or_with_a_nan_loss_is_not_ok(tmp_path):
    _write_run(tmp_path / "a", "voxceleb1/train-loss", [1.0, 0.5], ["train at step 2: 0.5"])
    assert read_row(TASKS["SID"], tmp_path / "a", 1.0, 0, "").reason == "no dev acc in the logs"
    _write_run(tmp_path / "b", "voxceleb1/train-loss", [1.0, float("nan")], ["dev at step 2: 0.5"])
    assert read_row(TASKS["SID"], tmp_path / "b", 1.0, 0, "").reason == "a loss or the dev metric is not finite"
    _write_run(tmp_path / "c", "asr/train-loss", [], [])
    assert read_row(TASKS["ASR"], tmp_path / "c", 1.0, 0, "").reason == "no training loss logged (asr/train-loss)"


def test_missing_data_fails_that_task_without_running_it(tmp_path):
    (tmp_path / "data").mkdir()
    rows = run_smoke(["-u", "fbank"], tmp_path / "data", tmp_path / "out", tasks=["KS"])
    assert len(rows) == 1 and not rows[0].ok and rows[0].seconds == 0
    assert rows[0].reason == f"{tmp_path / 'data' / 'speech_commands/train'} is missing (recycle-distill make-data writes it)"
    record = json.loads((tmp_path / "out" / "smoke.json").read_text())
    assert record["rows"][0]["reason"] == rows[0].reason and record["upstream"] == ["-u", "fbank"]
    assert "failed: " in (tmp_path / "out" / "smoke.txt").read_text()
    # An earlier smoke run is replaced; a folder of the user's is not.
    run_smoke(["-u", "fbank"], tmp_path / "data", tmp_path / "out", tasks=["SID"])
    assert sorted(os.listdir(tmp_path / "out")) == ["smoke.json", "smoke.txt"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="not a superb-smoke folder \\(no smoke.json\\)"):
        run_smoke(["-u", "fbank"], tmp_path / "data", tmp_path / "mine", tasks=["KS"])
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_bad_options_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(["superb-smoke", "-u", "fbank", "--data", str(tmp_path), "--steps", "0"])
    assert stop.value.code == 2 and "must be positive, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown smoke task 'PR'; choose from KS, SID, ASR"):
        run_smoke(["-u", "fbank"], tmp_path, tmp_path / "out", tasks=["PR"])
    assert cli_main(["superb-smoke", "-u", "fbank", "--data", str(tmp_path / "none")]) == 1
    assert "no such folder (write one with recycle-distill make-data)" in capsys.readouterr().err


def test_the_sox_stand_in_applies_speech_commands_effects(tmp_path):
    """channels 1, rate 16000, gain -3 dB, as S3PRL's Speech Commands dataset asks of sox."""
    import torch

    rng = np.random.default_rng(0)
    stereo = (0.3 * rng.standard_normal((8000, 2))).astype(np.float32)  # 1 s at 8 kHz
    path = tmp_path / "clip.wav"
    soundfile.write(str(path), stereo, 8000, subtype="FLOAT")
    wave, rate = apply_effects_without_sox(str(path), [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]])
    assert rate == 16000 and wave.shape == (1, 16000) and wave.dtype == torch.float32
    import torchaudio.functional

    expected = torchaudio.functional.resample(torch.from_numpy(stereo.mean(axis=1))[None], 8000, 16000) * 10 ** (-3 / 20)
    torch.testing.assert_close(wave, expected)
    with pytest.raises(RuntimeError, match="needs libsox"):
        apply_effects_without_sox(str(path), [["tempo", "1.1"]])


@pytest.mark.slow
@pytest.mark.s3prl
@pytest.mark.skipif(not espeak_available(), reason="make-data needs espeak-ng")
def test_the_smoke_command_runs_ks_sid_asr_on_the_tiny_student(tmp_path):
    from helpers.superb_data import tiny_checkpoint, voxceleb1_cache

    from recycle_distill.lab.make_data import make_data

    make_data(tmp_path / "data", corpora=["librispeech", "speech_commands", "voxceleb1"])
    ckpt, config = tiny_checkpoint(tmp_path / "ckpt", "armhubert")
    package_cache = voxceleb1_cache()
    before = sorted(package_cache.rglob("*")) if package_cache.exists() else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RECYCLE_DISTILL_NO_COMPAT", None)
    result = subprocess.run([sys.executable, "-m", "recycle_distill", "superb-smoke", "-u", "armhubert", "-k", str(ckpt),
                             "-g", str(config), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "smoke"),
                             "--steps", "3"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task"))
    table = {line.split()[0]: line for line in lines[start + 1:start + 4]}
    assert list(table) == ["KS", "SID", "ASR"]
    record = json.loads((tmp_path / "smoke" / "smoke.json").read_text())
    for row in record["rows"]:
        task, expdir = TASKS[row["task"]], tmp_path / "smoke" / row["task"]
        losses = read_scalars(expdir, task.loss_tag)
        # The table shows what S3PRL logged: 3 steps, the first and last loss, the dev metric.
        assert row["ok"] and row["steps"] == 3 and [step for step, _ in losses] == [1, 2, 3]
        assert (row["loss_first"], row["loss_last"]) == (losses[0][1], losses[-1][1])
        assert re.search(rf"^{row['task']}\s+3\s+{row['loss_first']:.4g} -> {row['loss_last']:.4g}\s+"
                         rf"{task.metric} {row['dev']:.4g}\s+[0-9.]+ s\s+ok$", table[row["task"]])
        assert (expdir / "states-3.ckpt").is_file()
    log = (tmp_path / "smoke" / "KS" / "log.log").read_text()
    assert f"dev at step 3: {record['rows'][0]['dev']}" in log
    asr_stdout = (tmp_path / "smoke" / "ASR" / "superb.log").read_text()
    assert f"dev-clean wer: {record['rows'][2]['dev']}" in asr_stdout
    # S3PRL's voxceleb1 file lists went to the run's own folder, not into the installed package.
    assert (tmp_path / "smoke" / "SID" / "voxceleb1_cache" / "train.pkl").is_file()
    assert (sorted(package_cache.rglob("*")) if package_cache.exists() else []) == before


def test_a_damaged_event_file_keeps_the_records_before_the_damage(tmp_path):
    expdir = tmp_path / "KS"
    _write_run(expdir, "speech_commands/train-loss", [2.0, 1.0], [])
    (event_file,) = expdir.glob("events.out.tfevents.*")
    whole = event_file.read_bytes()
    event_file.write_bytes(whole[:-7])  # cut inside the last record, as a killed run leaves it
    assert read_scalars(expdir, "speech_commands/train-loss") == [(1, 2.0), (2, 1.0)]
    # A record whose bytes are not an event: the read of that file stops there.
    garbage = (5).to_bytes(8, "little") + b"\0" * 4 + b"\xff\xff\xff\xff\xff" + b"\0" * 4
    event_file.write_bytes(whole + garbage)
    assert read_scalars(expdir, "speech_commands/train-loss") == [(1, 2.0), (2, 1.0)]
