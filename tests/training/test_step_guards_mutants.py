"""The trainer's step guards (``training/step_guards.py``) on a stand-in trainer: the exact
warnings and errors of a skipped step, the TensorBoard count, clipping and unscaling in the
finiteness check, the ``--check`` summary of a partial probe, and how batch files are named.

Written for the survivors of mutation testing (docs/development.md, Mutation testing); the
trainer-level behaviour is in ``test_train_guards.py`` and ``test_run_safety.py``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from recycle_distill.training.step_guards import StepGuards, TrainingDiverged, _name_files
from recycle_distill.util.messages import short_repr


class _Writer:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, *args):
        self.scalars.append(args)


class _Guarded(StepGuards):
    """The attributes :class:`StepGuards` reads, on a one-parameter model."""

    def __init__(self, *, max_bad_steps=3, gradient_clip=0.0, scaler=None, train_set=None):
        self.config = SimpleNamespace(train=SimpleNamespace(max_bad_steps=max_bad_steps, gradient_clip=gradient_clip))
        self.dist = SimpleNamespace(is_main=True, any=lambda flag: flag)
        self.student = torch.nn.Linear(2, 1, bias=False)
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=0.1)
        self.scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
        self.writer = _Writer()
        self.train_set = train_set
        self.step, self.bad_steps, self.skipped_steps = 7, 0, 3
        self.checkpoint_dir = "runs/x/checkpoints"


def test_a_skipped_step_warns_counts_and_logs_to_tensorboard(caplog):
    guarded = _Guarded()
    with caplog.at_level(logging.WARNING, logger="recycle_distill.training.trainer"):
        loss = guarded._skip_step({"loss": torch.tensor(float("nan"))})
    assert loss != loss and guarded.bad_steps == 1 and guarded.skipped_steps == 4
    assert caplog.messages == ["step 8: non-finite loss or gradient (loss nan); optimizer step skipped "
                               "(1 in a row, stopping at 3)"]
    assert guarded.writer.scalars == [("train/skipped_steps", 4, 7)]


def test_a_skipped_step_names_its_batch(caplog):
    with caplog.at_level(logging.WARNING, logger="recycle_distill.training.trainer"):
        _Guarded()._skip_step({"loss": torch.tensor(float("inf"))}, ["a.wav", "b.wav"])
    assert caplog.messages[0].endswith("(1 in a row, stopping at 3); its batch: a.wav, b.wav")


def test_the_last_bad_step_without_files_gives_the_general_advice():
    guarded = _Guarded(max_bad_steps=1)
    with pytest.raises(TrainingDiverged) as caught:
        guarded._skip_step({"loss": torch.tensor(float("nan"))})
    assert str(caught.value) == ("stopped at step 8: 1 optimizer steps in a row had a non-finite loss or gradient; "
                                 "lower optimizer.lr, check the audio, or raise train.max_bad_steps (the last "
                                 "checkpoint is in runs/x/checkpoints)")


def test_clipping_applies_to_a_limit_below_one():
    guarded = _Guarded(gradient_clip=0.5)
    guarded.student.weight.grad = torch.tensor([[3.0, 4.0]])  # norm 5
    assert guarded._step_is_finite(torch.tensor(1.0)) is True
    torch.testing.assert_close(guarded.student.weight.grad, torch.tensor([[0.3, 0.4]]))


def test_the_check_unscales_the_gradients_first():
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(torch.tensor(1.0))  # the training step scales its loss before the check
    guarded = _Guarded(scaler=scaler)
    guarded.student.weight.grad = torch.tensor([[4.0, 8.0]])
    assert guarded._step_is_finite(torch.tensor(1.0)) is True
    torch.testing.assert_close(guarded.student.weight.grad, torch.tensor([[1.0, 2.0]]))


def test_a_model_without_gradients_is_judged_by_its_loss():
    guarded = _Guarded()
    assert guarded._step_is_finite(torch.tensor(1.0)) is True
    assert guarded._step_is_finite(torch.tensor(float("nan"))) is False


def test_a_partial_probe_says_how_many_of_how_many():
    class _Set:
        def __len__(self):
            return 5

        def probe(self):
            return 2, 1  # files read, of which skipped

    guarded = _Guarded(train_set=_Set())
    assert guarded.probe_data() == "read 2 of the 5 training files (spread over the manifest), 1 would be skipped"


def test_batch_files_are_named_up_to_four_then_counted():
    assert _name_files(["a", "b", "c", "d"]) == "a, b, c, d"
    assert _name_files(["a", "b", "c", "d", "e"]) == "a, b, c, d, ... (5 in all)"


def test_long_or_unprintable_paths_are_bounded():
    exact, longer, odd = "p" * 200, "p" * 201, "bad\nname.wav"
    assert _name_files([exact]) == exact
    assert _name_files([longer]) == short_repr(longer, 200) != longer
    assert _name_files([odd]) == "'bad\\nname.wav'"
