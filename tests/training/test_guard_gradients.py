"""The fp32 step guard skips a step whose loss is finite but whose gradient is not.

``test_train_guards.py`` makes the loss itself NaN/inf, which every guard catches from the loss
alone; here the loss stays finite and one parameter's gradient (the first or the last one the
guard looks at) is NaN or inf, with and without gradient clipping (two different checks)."""

from __future__ import annotations

import math
import types

import pytest
import torch

from recycle_distill.training.config import OptimizerSection, TrainSection
from recycle_distill.training.distributed import DistributedContext
from recycle_distill.training.optim import build_optimizer
from recycle_distill.training.trainer import Trainer, TrainingDiverged


class PoisonGradient(torch.autograd.Function):
    """Identity forward; the backward hands on the gradient times ``bad`` (NaN or inf)."""

    @staticmethod
    def forward(ctx, tensor, bad):
        ctx.bad = bad
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.bad, None


def bare_trainer(tmp_path, gradient_clip: float, max_bad_steps: int = 5) -> Trainer:
    """A Trainer with just what ``_optimizer_step`` needs: a Linear(4, 3) student, AdamW, fp32."""
    torch.manual_seed(0)
    trainer = Trainer.__new__(Trainer)
    student = torch.nn.Linear(4, 3)
    trainer.optimizer, trainer.scheduler = build_optimizer(
        student.parameters(), OptimizerSection(lr=1e-2, warmup_proportion=0.0), 10)
    trainer.config = types.SimpleNamespace(train=TrainSection(max_bad_steps=max_bad_steps, gradient_clip=gradient_clip))
    trainer.student = trainer.model = student
    trainer.scaler = torch.amp.GradScaler("cuda", enabled=False)
    trainer.dist = DistributedContext(0, 1, 0, torch.device("cpu"))
    trainer.step = trainer.epoch = trainer.bad_steps = trainer.skipped_steps = 0
    trainer.writer = None
    trainer.output_dir, trainer.checkpoint_dir = str(tmp_path), str(tmp_path / "checkpoints")
    trainer.train_set = types.SimpleNamespace(skipped=0)
    return trainer


def step(trainer: Trainer, poisoned: str = "", bad: float = math.nan) -> float:
    """One optimizer step on a finite loss; ``poisoned`` names the parameter whose gradient is ``bad``."""
    student = trainer.student
    weight = PoisonGradient.apply(student.weight, bad) if poisoned == "weight" else student.weight
    bias = PoisonGradient.apply(student.bias, bad) if poisoned == "bias" else student.bias
    loss = torch.nn.functional.linear(torch.ones(2, 4), weight, bias).pow(2).sum()
    loss.backward()
    progress = types.SimpleNamespace(update=lambda n: None, set_postfix=lambda **k: None)
    return trainer._optimizer_step({"loss": loss.detach()}, progress, {"loss": 0.0, "utterances": 0, "started": 0.0})


@pytest.mark.parametrize("poisoned", ["weight", "bias"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("clip", [10.0, 0.0])
def test_a_finite_loss_with_a_non_finite_gradient_is_skipped(tmp_path, poisoned, bad, clip):
    trainer = bare_trainer(tmp_path, clip)
    before = {key: value.clone() for key, value in trainer.student.state_dict().items()}
    seen = []
    handle = trainer.student.get_parameter(poisoned).register_hook(lambda grad: seen.append(grad.clone()))
    loss = step(trainer, poisoned, bad)
    handle.remove()
    assert math.isfinite(loss) and not bool(torch.isfinite(seen[0]).all())
    assert (trainer.step, trainer.bad_steps, trainer.skipped_steps) == (0, 1, 1)
    assert trainer.scheduler.last_epoch == 0 and not trainer.optimizer.state  # AdamW never stepped
    assert all(torch.equal(value, before[key]) for key, value in trainer.student.state_dict().items())
    assert all(parameter.grad is None for parameter in trainer.student.parameters())
    # The next, healthy step trains and ends the run of bad steps.
    assert math.isfinite(step(trainer))
    assert (trainer.step, trainer.bad_steps) == (1, 0)
    assert all(bool(torch.isfinite(p).all()) and not torch.equal(p, before[k])
               for k, p in trainer.student.named_parameters())


def test_finite_losses_with_non_finite_gradients_in_a_row_stop_the_run(tmp_path):
    trainer = bare_trainer(tmp_path, gradient_clip=0.0, max_bad_steps=2)
    step(trainer, "bias")
    with pytest.raises(TrainingDiverged, match=r"^stopped at step 1: 2 optimizer steps in a row had a non-finite"):
        step(trainer, "weight", math.inf)
