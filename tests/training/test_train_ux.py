"""Training runs a user can follow (issue 23 item 7): the tiny example run, Ctrl-C that saves and
prints the resume command, defaults that follow the student, the loss plot."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

import pytest
import soundfile

from recycle_distill.checkpoint import read_provenance
from recycle_distill.students.config import ConfigError
from recycle_distill.training import config_help, load_train_config
from recycle_distill.training.config import list_examples, list_recipes
from recycle_distill.training.example import prepare_example
from recycle_distill.training.loss_plot import write_loss_plot
from recycle_distill.training.state import load_training_state

from helpers.train_helpers import metrics, tiny_config

SVG = "{http://www.w3.org/2000/svg}"


# ------------------------------------------------------------------ defaults that follow the student
@pytest.mark.parametrize("layers, expected", [(4, 3), (2, 1), (12, 11)])
def test_hint_layers_default_to_every_layer_below_the_students_last(tmp_path, layers, expected):
    config = tiny_config(tmp_path, tmp_path / "run", "maskhubert", distiller={"encoder_layers": layers})
    del config["train"]["distil_random_layer"]
    assert load_train_config(config).train.distil_random_layer == expected


def test_an_explicit_hint_layer_count_is_kept_and_still_checked(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "run", "maskhubert", train={"distil_random_layer": 1})
    assert load_train_config(config).train.distil_random_layer == 1
    config["train"]["distil_random_layer"] = 11
    with pytest.raises(ConfigError, match="train.distil_random_layer: 11 hint layers, but the student has only 3"):
        load_train_config(config)


def test_help_says_the_hint_layer_default_follows_the_student():
    line = next(line for line in config_help().splitlines() if line.strip().startswith("distil_random_layer"))
    assert "(default None)" in line and "distiller.encoder_layers - 1" in line


# ------------------------------------------------------------------ the loss plot
def _points(polyline: ElementTree.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in polyline.get("points").split()]


def test_the_loss_plot_draws_each_logged_step_and_each_validation(tmp_path):
    # Step 2 logged twice (a run resumed from step 1 repeats it): the later value is drawn.
    train = [(1, 3.0), (2, 5.0), (2, 1.0), (3, 2.0), (4, 0.5)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": v, "lr": 1e-3}) + "\n"
                                                    for s, v in train) + '{"step": 5, "lo')  # a write cut short
    (tmp_path / "validation.jsonl").write_text('{"step": 2, "loss": 2.5}\n{"step": 4, "loss": 1.5}\n')
    path = write_loss_plot(str(tmp_path), title="armhubert (masking)")
    assert path == str(tmp_path / "loss.svg")
    root = ElementTree.parse(path).getroot()
    lines = {line.get("id"): _points(line) for line in root.iter(f"{SVG}polyline")}
    drawn = lines["train"]
    assert len(drawn) == 4  # steps 1..4, once each
    assert [x for x, _ in drawn] == sorted(x for x, _ in drawn)
    # SVG's y grows downwards: a lower loss is drawn lower on the page, i.e. at a larger y.
    by_loss = sorted(zip([3.0, 1.0, 2.0, 0.5], drawn), key=lambda pair: pair[0])
    assert [y for _, (_, y) in by_loss] == sorted((y for _, (_, y) in by_loss), reverse=True)
    circles = [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{SVG}circle")]
    assert circles == lines["valid"] and len(circles) == 2
    # Validation at step 2 sits at the x of training step 2, between training losses 3.0 and 1.0.
    assert circles[0][0] == pytest.approx(drawn[1][0])
    assert drawn[0][1] < circles[0][1] < drawn[1][1]
    assert "armhubert (masking)" in {text.text for text in root.iter(f"{SVG}text")}


def test_no_plot_before_the_first_step(tmp_path):
    assert write_loss_plot(str(tmp_path)) is None
    assert not (tmp_path / "loss.svg").exists()


# ------------------------------------------------------------------ the tiny example run
def _run(args: list[str], cwd: pathlib.Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recycle_distill", "train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_the_example_is_shipped_apart_from_the_published_recipes():
    assert list_examples() == ["tiny-example"]
    assert "tiny-example" not in list_recipes()
    config = load_train_config("tiny-example")
    assert (config.family, config.student.encoder_layers, config.train.distil_random_layer) == ("armhubert", 4, 3)


def test_checking_the_example_before_its_first_run_says_what_is_missing(tmp_path, monkeypatch, capsys):
    from recycle_distill.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "-c", "tiny-example", "--check"]) == 2
    assert capsys.readouterr().err == (
        "error: tiny-example-data/tiny-teacher.pt, tiny-example-data/LibriSpeech: not written yet; the first run of "
        "tiny-example writes them (--check writes nothing): run it without --check\n")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    """A working directory holding the example's teacher and corpus, as the first run writes them."""
    folder = tmp_path_factory.mktemp("example")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        written = prepare_example(load_train_config("tiny-example"))
    finally:
        os.chdir(cwd)
    assert written == ["tiny-example-data/tiny-teacher.pt", "tiny-example-data/LibriSpeech"]
    return folder


@pytest.mark.slow
def test_the_tiny_example_runs_from_nothing_and_leaves_a_plot_and_a_recorded_student(tmp_path):
    started = time.perf_counter()
    done = _run(["-c", "tiny-example"], cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert "writing the tiny example's random-weight teacher to tiny-example-data/tiny-teacher.pt" in done.stderr
    assert "writing the tiny example's corpus to tiny-example-data/LibriSpeech" in done.stderr
    run = tmp_path / "runs" / "tiny-example"
    assert done.stdout.startswith(f"done: 80 steps, last loss ")
    assert [record["step"] for record in metrics(run)] == list(range(1, 81))
    validations = [json.loads(line) for line in (run / "validation.jsonl").read_text().splitlines()]
    assert [record["step"] for record in validations] == [20, 40, 60, 80]
    root = ElementTree.parse(run / "loss.svg").getroot()
    lines = {line.get("id"): line.get("points").split() for line in root.iter(f"{SVG}polyline")}
    assert (len(lines["train"]), len(lines["valid"])) == (80, 4)
    assert any((run / "tensorboard").iterdir())  # the plot lies beside the TensorBoard logs
    record = read_provenance(str(run / "student.safetensors"))
    teacher = tmp_path / "tiny-example-data" / "tiny-teacher.pt"
    assert record["teacher"] == {"kind": "hubert", "name": "tiny-teacher.pt",
                                 "sha256": hashlib.sha256(teacher.read_bytes()).hexdigest()}
    files = sorted((tmp_path / "tiny-example-data" / "LibriSpeech" / "train-clean-100").rglob("*.flac"))
    hours = sum(soundfile.info(str(path)).frames for path in files) / 16000 / 3600
    assert record["data"]["hours"] == pytest.approx(hours, abs=1e-4) and record["steps"] == 80
    print(f"tiny example: {seconds:.1f} s from nothing (corpus and teacher written, 80 steps)")


@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_prints_a_command_that_resumes_it(example_dir):
    args = ["-c", "tiny-example", "train.output_dir=runs/interrupted", "train.max_steps=16",
            "train.num_workers=1", "train.val_every_steps=0", "train.save_every_steps=0"]
    run = example_dir / "runs" / "interrupted"
    # A terminal's Ctrl-C reaches the whole process group: the trainer and its DataLoader worker.
    process = subprocess.Popen([sys.executable, "-m", "recycle_distill", "train", *args], cwd=example_dir,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-3000:]
    step = metrics(run)[-1]["step"]
    assert 2 <= step < 16
    checkpoint = f"./runs/interrupted/checkpoints/step-{step:08d}.pt"
    assert f"interrupted at step {step} of 16: saved {checkpoint}\n" in err
    assert load_training_state(str(example_dir / checkpoint))["step"] == step
    assert not (run / "student.safetensors").exists()  # stopped, not finished
    command = re.search(r"^resume with: (.*)$", err, re.MULTILINE).group(1)
    assert command == shlex.join([sys.executable, "-m", "recycle_distill", "train", *args,
                                  f"train.checkpoint={checkpoint}"])

    resumed = subprocess.run(shlex.split(command), cwd=example_dir, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {checkpoint} at step {step} " in resumed.stderr
    assert [record["step"] for record in metrics(run)] == list(range(1, 17))  # each step once, none lost
    assert read_provenance(str(run / "student.safetensors"))["steps"] == 16
