"""The paper's recipe end to end through S3PRL's real runner: ``cif_asr_paper.yaml`` (tri-stage
schedule, SpecAugment, HieraDist) trains a tiny recognizer on a tiny espeak-ng AISHELL-1 corpus
with only the corpus, the language model and the sizes overridden; ``average-checkpoints --last 3``
averages its checkpoints; the average evaluates with ``-m evaluate -e`` and transcribes."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from recycle_distill.checkpoint.safe_load import safe_torch_load
from recycle_distill.recognizer.average import RECORD

from helpers.cif_asr_data import make_aishell_corpus, write_tiny_bert
from helpers.superb_data import run_checked, tiny_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "recycle_distill" / "s3prl" / "downstream_configs" / "cif_asr_paper.yaml"
HANZI = "零一二三四五六七八九"
STEPS = 3
TINY = ["runner.total_steps=3", "runner.save_step=1", "runner.max_keep=3", "runner.eval_step=3", "runner.log_step=1",
        "runner.gradient_accumulate_steps=1", "scheduler.warmup_steps=1", "scheduler.hold_steps=1",
        "scheduler.decay_steps=1"]
SMALL = ["model.d_model=32", "model.conformer_layers=1", "model.conformer_ffn=64", "model.predictor_channels=32",
         "model.decoder_ffn=64", "data.batch_size=3", "data.num_workers=0", "decode.beam_size=2"]


def _texts(count: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return ["".join(rng.choice(HANZI) for _ in range(4)) for _ in range(count)]


def _launcher(*args: str) -> list:
    return [sys.executable, "-m", "recycle_distill", *args]


def test_the_paper_config_trains_and_its_average_evaluates(tmp_path):
    corpus = make_aishell_corpus(tmp_path / "aishell", {"train": _texts(6, 0), "dev": _texts(2, 1),
                                                        "test": _texts(2, 2)})
    bert = write_tiny_bert(tmp_path / "bert_zh", list(HANZI))
    ckpt, config = tiny_checkpoint(tmp_path / "upstream", "maskhubert")
    expdir = tmp_path / "paper"
    overrides = [f"config.{item}" for item in TINY] + [
        f"config.downstream_expert.{item}" for item in [f"corpus.root={corpus}", f"lm.path={bert}", *SMALL]]
    run_checked(_launcher("superb", "-m", "train", "-d", "cif_asr", "-c", str(PAPER), "-u", "maskhubert",
                          "-k", str(ckpt), "-g", str(config), "-p", str(expdir), "-o", ",,".join(overrides)), REPO)
    states = sorted(expdir.glob("states-*.ckpt"))
    assert [p.name for p in states] == [f"states-{step}.ckpt" for step in (1, 2, 3)]
    saved = safe_torch_load(states[-1])
    assert saved["Config"]["scheduler"]["name"] == "tri_stage_schedule"
    assert saved["Config"]["downstream_expert"]["spec_augment"]["enabled"] is True
    # warm-up 1, hold 1, decay 1 to 0.01: after 3 updates the schedule sits at its floor, 0.01 x 3e-4.
    assert saved["Optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-6)

    average = expdir / "average-last3.ckpt"
    out = run_checked(_launcher("average-checkpoints", str(expdir), "--last", "3", "-o", str(average)), REPO).stdout
    assert "averaged 3 checkpoints (steps 1, 2, 3)" in out
    inputs = [safe_torch_load(path) for path in states]
    averaged = safe_torch_load(average)
    name = "model.ctc_head.weight" if "model.ctc_head.weight" in averaged["Downstream"] else next(
        key for key, value in averaged["Downstream"].items() if value.is_floating_point() and value.dim() == 2)
    mean = sum(state["Downstream"][name].double() for state in inputs) / 3
    torch.testing.assert_close(averaged["Downstream"][name], mean.float(), rtol=1e-6, atol=0)
    assert [item["step"] for item in averaged[RECORD]] == [1, 2, 3]

    result = run_checked(_launcher("superb", "-m", "evaluate", "-e", str(average), "-t", "test"), REPO).stdout
    assert re.search(r"^\[cif_asr\] test step \d+: .*cer ", result, flags=re.MULTILINE), result[-3000:]
    hypotheses = sorted(expdir.glob("test-hyp-*.txt"))
    assert len(hypotheses) == 1, sorted(p.name for p in expdir.iterdir())
    assert hypotheses[0].read_text().count("\n") == 2


def test_an_average_of_a_trained_experiment_transcribes_like_its_checkpoint(tmp_path_factory, tmp_path):
    """Averaging the trained digits experiment's checkpoint with a copy of itself at a later step
    changes no weight, so the average must give the same transcripts: the average is a checkpoint
    the transcriber rebuilds like any other."""
    from recycle_distill.recognizer.torch_recognizer import Recognizer

    from helpers.trained_recognizer import trained_digits_experiment

    source, waves, texts = trained_digits_experiment(tmp_path_factory)
    expdir = tmp_path / "expdir"
    shutil.copytree(source, expdir)
    state = torch.load(expdir / "dev-best.ckpt", weights_only=False)
    torch.save(state, expdir / f"states-{state['Step']}.ckpt")
    torch.save({**state, "Step": state["Step"] + 1}, expdir / f"states-{state['Step'] + 1}.ckpt")
    (expdir / "dev-best.ckpt").unlink()
    average = expdir / "average.ckpt"
    run_checked(_launcher("average-checkpoints", str(expdir), "--last", "2", "-o", str(average)), REPO)
    transcripts = Recognizer.from_experiment(average).transcribe(waves)
    assert [t.text for t in transcripts] == texts
