"""The README's main job, `recycle-distill demo`: end to end on short settings, and its parts."""

import argparse
import os
import re
import subprocess
import sys

import pytest
import torch

from recycle_distill.training.data.synth import espeak_available
from recycle_distill.lab.demo.keywords import KEYWORDS, make_keyword_set
from recycle_distill.lab.demo.probe import ProbeScores, paired_difference, probe_accuracies
from recycle_distill.lab.demo.transfer import _align

STAGES = ("corpus", "teacher", "distil", "load", "transfer", "downstream", "report")


def _table_rows(report: str, header: str) -> list[list[str]]:
    """Cells of the markdown table that starts with ``header`` (header and rule excluded)."""
    lines = report.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("*") for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
@pytest.mark.s3prl
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo_out"
    result = subprocess.run(
        [sys.executable, "-m", "recycle_distill", "demo", "--out", str(out), "--steps", "40", "--teacher-steps",
         "8", "--probe-steps", "60", "--speakers", "3"],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for number, stage in enumerate(STAGES, 1):
        assert f"[{number}/{len(STAGES)}] {stage}" in result.stdout
    report = (out / "report.md").read_text()
    for figure in ("loss.png", "transfer.png"):
        assert (out / figure).stat().st_size > 1000
    assert "| teacher |" in report and "| student |" in report and "real-time factor" in report

    # Transfer: one row per distilled layer (4), distilled CKA above random-init CKA on each.
    transfer = _table_rows(report, "| student hidden state |")
    assert [row[0] for row in transfer] == ["0", "1", "2", "3"]
    for row in transfer:
        random_cka, distilled_cka = float(row[2]), float(row[3])
        assert 0.0 <= random_cka < distilled_cka <= 1.0, row
    assert "above random-init CKA on every distilled layer: **yes**" in report

    # Downstream: chance and the four feature rows, each with an accuracy in [0, 1].
    downstream = _table_rows(report, "| features |")
    assert [row[0] for row in downstream] == ["chance", "fbank", "random-init student", "distilled student", "teacher"]
    assert float(downstream[0][1]) == pytest.approx(1 / len(KEYWORDS))
    for row in downstream[1:]:
        mean, spread = (float(value) for value in re.fullmatch(r"([\d.]+) ± ([\d.]+)", row[1]).groups())
        assert 0.0 <= mean <= 1.0 and spread >= 0.0
        assert len(row[2].split()) == 4  # one accuracy per fold
    assert "beyond fold-to-fold noise" in report
    assert re.search(r"validation loss \(dev-clean, clean input\): [\d.]+ \(step 0\), ", report)
    if espeak_available():
        assert "corpus: **espeak-ng** speech" in report
    else:
        assert "SYNTHETIC" in report and "SYNTHETIC" in result.stdout


def test_failing_stage_is_named(tmp_path, monkeypatch):
    from recycle_distill.lab.demo import pipeline

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "_teacher", broken)
    monkeypatch.setattr(pipeline, "_corpus", lambda *args: None)
    messages = []
    with pytest.raises(pipeline.DemoError, match="stage 'teacher' failed: OSError: disk full"):
        pipeline.run_demo(pipeline.DemoOptions(out=tmp_path, echo=messages.append))
    assert messages[0] == "\n[1/7] corpus" and "\n[2/7] teacher" in messages


@pytest.mark.parametrize("flag, value, message", [
    ("steps", 0, "demo: --steps must be at least 1, got 0"),
    ("teacher_steps", -1, "demo: --teacher-steps must be 0 or more, got -1"),
])
def test_cli_rejects_bad_counts_in_one_line(flag, value, message, capsys, tmp_path):
    from recycle_distill.cli import demo

    args = dict(out=tmp_path, steps=10, teacher_steps=0, family="armhubert", probe_steps=10, speakers=2, seed=0)
    args[flag] = value
    assert demo.run(argparse.Namespace(**args)) == 2
    assert capsys.readouterr().err == message + "\n"


def test_keyword_set_has_every_word_from_every_voice():
    keywords = make_keyword_set(num_voices=3, takes=2, use_espeak=False)
    assert keywords.source == "synthetic" and len(keywords.waves) == 3 * 2 * len(KEYWORDS)
    for voice in range(3):
        labels = keywords.labels[keywords.voices == voice]
        assert torch.bincount(labels, minlength=len(KEYWORDS)).tolist() == [2] * len(KEYWORDS)
    assert min(wave.numel() for wave in keywords.waves) > 1600
    with pytest.raises(ValueError, match=r"num_voices must be in \[1, 12\], got 13"):
        make_keyword_set(num_voices=13)


def test_probe_separates_separable_classes_and_not_random_labels():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat(20)
    groups = torch.arange(80) // 10  # 8 voices, every class in each
    # Layer 1 carries the class (one-hot plus noise), layer 0 only noise: the weights must find it.
    informative = torch.nn.functional.one_hot(labels, 6).float() * 3 + 0.3 * torch.randn(80, 6)
    features = torch.stack([torch.randn(80, 6), informative], dim=1)
    scores = probe_accuracies(features, labels, groups, folds=4, seeds=(0,), steps=150)
    assert scores.per_fold == [1.0, 1.0, 1.0, 1.0]
    noise = probe_accuracies(torch.randn(80, 2, 6), labels, groups, folds=4, seeds=(0, 1), steps=150)
    assert noise.mean < 0.5


def test_paired_difference_and_spread():
    a = ProbeScores([[0.9, 0.7], [0.6, 0.6], [0.7, 0.7]])
    b = ProbeScores([[0.5, 0.5], [0.5, 0.5], [0.6, 0.6]])
    assert a.per_fold == pytest.approx([0.8, 0.6, 0.7])
    assert a.std == pytest.approx(0.1)
    mean, error = paired_difference(a, b)
    assert mean == pytest.approx(1 / 6)  # fold differences 0.3, 0.1, 0.1
    assert error == pytest.approx(1 / 15)  # sample variance 1/75 over 3 folds


def test_align_averages_teacher_frames_for_a_time_reduced_student():
    student = torch.zeros(5, 3)
    teacher = torch.arange(11, dtype=torch.float32).unsqueeze(1)
    s, t = _align(student, teacher)
    assert s.shape == (5, 3) and t.squeeze(1).tolist() == [0.5, 2.5, 4.5, 6.5, 8.5]
    s, t = _align(torch.zeros(9, 3), teacher)  # same rate: first frames kept
    assert t.squeeze(1).tolist() == list(range(9))


def test_mfcc_units_sit_on_the_teacher_frame_grid():
    from recycle_distill.lab.demo.pretrain import mfcc_frames
    from recycle_distill.students.blocks.masks import conv_output_lengths

    teacher_cnn = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2  # (kernel, stride) of HuBERT's CNN
    for samples in (400, 16000, 23999):
        features = mfcc_frames(torch.randn(samples))
        assert features.shape == (int(conv_output_lengths(torch.tensor([samples]), teacher_cnn)[0]), 39)


def test_pretraining_crops_keep_waves_and_units_aligned():
    from recycle_distill.lab.demo.pretrain import _batch

    # Each sample holds its own index and each frame's unit is the frame index, so a crop that
    # starts at sample 320 k must carry units k, k + 1, ...
    waves = [torch.arange(48000, dtype=torch.float32), torch.arange(9000, dtype=torch.float32)]
    units = [torch.arange((wave.numel() - 400) // 320 + 1) for wave in waves]
    source, padding, target = _batch(waves, units, 6, 16000, torch.Generator().manual_seed(0))
    for row in range(6):
        samples = int((~padding[row]).sum())
        frames = (samples - 400) // 320 + 1
        first = int(target[row, 0])
        assert float(source[row, 0]) == 320 * first
        assert target[row, :frames].tolist() == list(range(first, first + frames))
        assert samples == (frames - 1) * 320 + 400


def _fake_result(distilled_cka):
    """A DemoResult with hand-set numbers: only the report's own logic is under test."""
    from recycle_distill.lab.demo.keywords import KeywordSet
    from recycle_distill.lab.demo.pipeline import DemoResult
    from recycle_distill.lab.demo.transfer import TransferScores

    result = DemoResult(corpus_source="espeak-ng", corpus_seconds=10.0, teacher_path="t.pt", init_path="i.safetensors",
                        export_path="s.safetensors", losses=[2.0, 1.0], valid=[(0, 1.0), (1, 1.5)],
                        valid_masked=[(0, 1.0), (1, 0.5)], train_seconds=1.0)
    result.keywords = KeywordSet(waves=[], labels=torch.zeros(4, dtype=torch.long), voices=torch.arange(4), source="espeak-ng")
    result.transfer = {
        "random": TransferScores(teacher_layers=[1, 3], cka=[0.2, 0.3], cosine=[0.0, 0.1], fbank_cka=[0.4, 0.4]),
        "distilled": TransferScores(teacher_layers=[1, 3], cka=distilled_cka, cosine=[0.5, None], fbank_cka=[0.4, 0.4]),
    }
    result.downstream = {
        "fbank": ProbeScores([[0.5, 0.5], [0.6, 0.6]]),
        "random-init student": ProbeScores([[0.2, 0.2], [0.3, 0.3]]),
        "distilled student": ProbeScores([[0.8, 0.8], [0.9, 0.9]]),
        "teacher": ProbeScores([[0.8, 0.8], [0.95, 0.95]]),
    }
    result.downstream_settings = {"folds": 2, "chance": 0.1, "clips": 4}
    result.profile = {"teacher": {"params": 100, "macs": 2e9, "rtf": 0.02},
                      "student": {"params": 25, "macs": 5e8, "rtf": 0.005}, "seconds": 10.0, "threads": 2,
                      "dtype": "float32"}
    result.stage_seconds = {"corpus": 60.0, "distil": 90.0}
    result.machine = {"cpu": "Some CPU", "cores": 2, "threads": 2, "torch": "2.8.0", "python": "3.11",
                      "load_1min_at_start": 0.5}
    result.loaded = {"torch_hub": "import torch\nupstream = None", "s3prl": "upstream = None",
                     "s3prl_features": [[2, 50, 96]]}
    return result


@pytest.mark.parametrize("distilled_cka, verdict", [([0.7, 0.8], "yes"), ([0.7, 0.25], "NO")])
def test_report_tables_and_verdicts(tmp_path, distilled_cka, verdict):
    from recycle_distill.lab.demo.pipeline import DemoOptions
    from recycle_distill.lab.demo.report import write_report

    write_report(tmp_path, DemoOptions(teacher_steps=0), _fake_result(distilled_cka))
    report = (tmp_path / "report.md").read_text()
    assert f"above random-init CKA on every distilled layer: **{verdict}**" in report
    assert _table_rows(report, "| student hidden state |")[1][4:6] == ["0.100", "n/a (widths differ)"]
    assert [row[:2] for row in _table_rows(report, "| features |")] == [
        ["chance", "0.100"], ["fbank", "0.550 ± 0.071"], ["random-init student", "0.250 ± 0.071"],
        ["distilled student", "0.850 ± 0.071"], ["teacher", "0.875 ± 0.106"]]
    # Paired fold differences: distilled - random = (0.6, 0.6): zero spread, beyond noise;
    # teacher - distilled = (0.0, 0.05): mean 0.025, s.e. 0.025, within noise.
    differences = {row[0]: row[1:] for row in _table_rows(report, "| difference |")}
    assert differences["distilled student − random-init student"] == ["+0.600", "0.000", "yes"]
    assert differences["teacher − distilled student"] == ["+0.025", "0.025", "no"]
    assert "Here the validation loss rose from 1.000 (step 0) to 1.500 (step 1) while the training objective" in report
    assert "What a random teacher can and cannot show" in report
    # What ran, and where: no stale promise, the machine and the time of this run.
    assert "not yet merged" not in report
    assert "both models in float32 as loaded" in report
    assert "`recycle-distill profile s.safetensors --dtype bf16` (or `int8`)" in report
    assert ("- this run: 2.5 min before this report (stage times at the end) on Some CPU, 2 logical cores "
            "(torch: 2 threads), torch 2.8.0, 1-min load 0.5 at the start") in report


@pytest.mark.slow  # two fresh interpreters, one importing S3PRL
@pytest.mark.s3prl
def test_the_reports_loading_lines_load_the_export_offline(tmp_path):
    """The lines the report prints, copied into a fresh interpreter elsewhere, load the demo's
    export (not a release: the Hub is offline) and give its hidden states."""
    from helpers.tiny_students import tiny_config, tiny_student
    from recycle_distill.checkpoint import save_compact
    from recycle_distill.lab.demo.pipeline import REPO_ROOT, DemoOptions, hub_code, s3prl_code
    from recycle_distill.lab.demo.report import write_report

    export = tmp_path / "run" / "student.safetensors"
    export.parent.mkdir()
    save_compact(str(export), tiny_student("armhubert").state_dict(), "armhubert", tiny_config("armhubert"))
    result = _fake_result([0.7, 0.8])
    result.loaded = {"torch_hub": hub_code(REPO_ROOT, "armhubert", str(export)),
                     "s3prl": s3prl_code("armhubert", str(export)), "s3prl_features": [[2, 50, 96]]}
    write_report(tmp_path, DemoOptions(teacher_steps=0), result)
    loading = (tmp_path / "report.md").read_text().split("## Loading the export", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", loading, flags=re.S)
    assert len(blocks) == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = "\nimport torch\nprint(len(upstream([torch.zeros(16000)])['hidden_states']))\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block + check], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, block + "\n" + done.stderr[-2000:]
        assert done.stdout.split()[-1] == "4"  # the tiny student's four hidden states


@pytest.mark.s3prl
def test_teacher_pretraining_is_reproducible_and_loads_back(tmp_path):
    import soundfile

    from recycle_distill.lab.demo.pretrain import pretrain_teacher
    from recycle_distill.training.teacher import load_teacher
    from recycle_distill.training.teacher.random_teacher import save_random_hubert

    generator = torch.Generator().manual_seed(0)
    waves = []
    for index in range(3):
        path = tmp_path / f"{index}.flac"
        soundfile.write(str(path), (0.1 * torch.randn(16000, generator=generator)).numpy(), 16000)
        waves.append(str(path))
    runs = []
    for name in ("a", "b"):
        teacher = save_random_hubert(tmp_path / f"{name}.pt", seed=0)
        runs.append(pretrain_teacher(teacher, waves, 3, clusters=4, batch_size=2, crop_seconds=0.5, progress=False))
    assert runs[0].losses == runs[1].losses and len(runs[0].losses) == 3
    trained = load_teacher(str(tmp_path / "a.pt")).model.state_dict()
    untrained = torch.load(save_random_hubert(tmp_path / "c.pt", seed=0), weights_only=True)["model"]
    assert not torch.equal(trained["encoder.layers.0.fc1.weight"], untrained["encoder.layers.0.fc1.weight"])
