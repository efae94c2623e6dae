"""``train.precision: bf16``: a bf16 teacher, the student under bf16 autocast, float32 losses and master weights.

Tiny teacher (tests/data/teacher) and tiny ARMHuBERT student, run in-process; every comparison
is bf16 against the same code in fp32 on identical weights and batches.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from recycle_distill.training.teacher import load_teacher
from recycle_distill.training import load_train_config
from recycle_distill.training.objectives import float32_loss
from recycle_distill.training.state import latest_checkpoint, load_training_state
from recycle_distill.training.trainer import Trainer

from helpers.train_helpers import TEACHER, metrics, synthetic_train_corpus, tiny_config


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    return synthetic_train_corpus(tmp_path_factory.mktemp("corpus"), utterances_per_speaker=4)


def _trainer(corpus, output, precision: str, objective: str = "masking", **train) -> Trainer:
    config = tiny_config(corpus, output, train={"batch_size": 2, "max_audio_seconds": 0.5, "num_workers": 0,
                                                "precision": precision, "objective": objective, **train})
    return Trainer(load_train_config(config))


def _first_batch(trainer: Trainer):
    trainer.train_loader.set_epoch(0)
    trainer.objective.set_epoch(0)
    return next(iter(trainer.train_loader))


def _first_step_loss(trainer: Trainer) -> tuple[float, dict[str, float]]:
    batch = _first_batch(trainer)
    with trainer._autocast():
        result = trainer.objective.training_loss(trainer.model, trainer.teacher, batch)
    assert result.total.dtype == torch.float32
    return float(result.total.detach()), {name: float(value.detach()) for name, value in result.terms.items()}


# ------------------------------------------------------------------ the teacher in bf16
@pytest.mark.s3prl  # the S3PRL model itself, cast: also on the compat stack
def test_teacher_cast_to_bf16_tracks_fp32_layer_by_layer():
    teacher = load_teacher(str(TEACHER))
    teacher_bf16 = load_teacher(str(TEACHER)).to(torch.bfloat16)
    assert (teacher.dtype, teacher_bf16.dtype) == (torch.float32, torch.bfloat16)
    torch.manual_seed(0)
    waves = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6000])
    mask = teacher.compute_mask_indices(teacher.frame_padding_mask(lengths, 8000), mask_prob=0.5, generator=3)
    for reference, output in zip(teacher.forward_masked_and_unmasked(waves, lengths, mask),
                                 teacher_bf16.forward_masked_and_unmasked(waves, lengths, mask)):
        assert torch.equal(output.padding_mask, reference.padding_mask)
        for ours, expected in zip(output.layer_results, reference.layer_results):
            assert ours.dtype == torch.bfloat16  # fp32 waves in, the teacher's own dtype out
            error = float((ours.float() - expected).norm() / expected.norm())
            assert 1e-4 < error < 3e-2  # bf16 did run (not a silent fp32 pass) and stayed close (~1e-2 on noise)


@pytest.mark.s3prl  # the S3PRL model itself, cast: also on the compat stack
def test_bf16_teacher_runs_without_autocast_and_feeds_its_first_layer_contiguous_rows():
    """A bf16 teacher switches autocast off inside and gives layer 0's attention a contiguous
    (T, B, D) input (a transposed view makes F.linear broadcast each frozen weight over T);
    a float32 teacher keeps both as they were (autocast followed, S3PRL's transposed view)."""
    waves = torch.randn(2, 6000, generator=torch.Generator().manual_seed(1))
    seen = {}
    outputs = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        teacher = load_teacher(str(TEACHER)).to(dtype)
        seen[name] = []
        handle = teacher.model.encoder.layers[0].self_attn.register_forward_pre_hook(
            lambda _m, _args, kwargs, name=name: seen[name].append(
                (kwargs["query"].is_contiguous(), torch.is_autocast_enabled("cpu"))), with_kwargs=True)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outputs[name] = teacher(waves)
            plain = teacher(waves)
        finally:
            handle.remove()
        if name == "bf16":
            for a, b in zip(plain.layer_results, outputs[name].layer_results):
                assert torch.equal(a, b)
    assert seen["bf16"] == [(True, False), (True, False)]
    assert [autocast for _, autocast in seen["fp32"]] == [True, False]
    assert seen["fp32"][1] == (False, False)  # plain float32: S3PRL's own transposed view


def test_float32_loss_turns_autocast_off_only_inside():
    batch = type("Batch", (), {"waveforms": torch.zeros(1, 4)})()
    a = torch.randn(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.mm(a, a).dtype == torch.bfloat16
        with float32_loss(batch):
            assert torch.mm(a, a).dtype == torch.float32
        assert torch.mm(a, a).dtype == torch.bfloat16


# ------------------------------------------------------------------ the trainer in bf16
@pytest.mark.parametrize("objective", ["masking", "star"])
def test_first_step_loss_of_bf16_is_within_1e2_of_fp32(tmp_path, tiny_corpus, objective):
    family = {"masking": "armhubert", "star": "starhubert"}[objective]
    losses = {}
    for precision in ("fp32", "bf16"):
        config = tiny_config(tiny_corpus, tmp_path / precision, family=family,
                             train={"batch_size": 2, "max_audio_seconds": 0.5, "precision": precision,
                                    "objective": objective})
        trainer = Trainer(load_train_config(config))
        assert trainer.teacher.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        assert all(p.dtype == torch.float32 for p in trainer.student.parameters())
        losses[precision] = _first_step_loss(trainer)
    (fp32, fp32_terms), (bf16, bf16_terms) = losses["fp32"], losses["bf16"]
    assert bf16 != fp32  # the bf16 step did run in reduced precision
    assert abs(bf16 - fp32) <= 1e-2 * abs(fp32)
    for name, value in fp32_terms.items():
        assert abs(bf16_terms[name] - value) <= 2e-2 * abs(value) + 1e-6, name


def test_a_tiny_bf16_run_ends_within_10_percent_of_fp32_with_float32_master_weights(tmp_path, tiny_corpus):
    steps = 30
    runs = {}
    for precision in ("fp32", "bf16"):
        trainer = _trainer(tiny_corpus, tmp_path / precision, precision, max_steps=steps, save_every_steps=steps,
                           val_every_steps=0, keep_last=1)
        runs[precision] = (trainer, trainer.fit())
    curves = {precision: [record["loss"] for record in metrics(tmp_path / precision)] for precision in runs}
    assert len(curves["fp32"]) == len(curves["bf16"]) == steps
    fp32_final, bf16_final = curves["fp32"][-1], curves["bf16"][-1]
    assert curves["fp32"][0] != curves["bf16"][0]
    assert fp32_final < 0.8 * curves["fp32"][0] and bf16_final < 0.8 * curves["bf16"][0]  # both did learn
    assert abs(bf16_final - fp32_final) <= 0.10 * fp32_final

    # Master weights, optimizer state and the export stay float32 (and finite) in bf16 runs.
    trainer, summary = runs["bf16"]
    state = load_training_state(latest_checkpoint(str(tmp_path / "bf16" / "checkpoints")))
    assert state["step"] == steps and state["config"]["train"]["precision"] == "bf16"
    for name, tensor in state["student"].items():
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32 and bool(torch.isfinite(tensor).all()), name
    moments = [value for entry in state["optimizer"]["state"].values() for key, value in entry.items()
               if key in ("exp_avg", "exp_avg_sq")]
    assert moments and all(m.dtype == torch.float32 and bool(torch.isfinite(m).all()) for m in moments)
    exported = load_file(summary["export"])
    assert exported and all(t.dtype == torch.float32 for t in exported.values() if t.is_floating_point())
    assert math.isfinite(summary["last_loss"]) and trainer.teacher.dtype == torch.bfloat16
