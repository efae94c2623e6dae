"""The tri-stage learning-rate schedule (fairseq's tri_stage) reaches S3PRL through the launcher and
gives the hand-computed learning rates at every stage boundary and inside every stage."""

from __future__ import annotations

import math

import pytest
import torch

from recycle_distill.downstreams.cif_asr.tri_stage import get_tri_stage_schedule, tri_stage_factor
from recycle_distill.s3prl.superb import launcher
from recycle_distill.util.config_check import ConfigError
from recycle_distill.util.safe_yaml import safe_load_bounded

PEAK = 0.5
# warm-up 4 updates from 0.02 x peak, hold 3, decay 2 to 0.04 x peak.
STAGES = {"warmup_steps": 4, "hold_steps": 3, "decay_steps": 2, "init_lr_scale": 0.02, "final_lr_scale": 0.04}
# Update index -> learning rate, worked out by hand from the definition:
# warm-up 0.02 + 0.98 * step / 4; hold 1; decay exp(ln(0.04) * t / 2) = 0.04 ** (t / 2); then 0.04.
EXPECTED = {
    0: 0.02 * PEAK,    # warm-up starts at init_lr_scale
    1: 0.265 * PEAK,   # inside the warm-up: 0.02 + 0.98 / 4
    3: 0.755 * PEAK,   # last warm-up update: 0.02 + 0.98 * 3 / 4
    4: PEAK,           # first hold update
    6: PEAK,           # last hold update
    7: PEAK,           # first decay update (t = 0)
    8: 0.2 * PEAK,     # inside the decay: sqrt(0.04)
    9: 0.04 * PEAK,    # end of the decay: final_lr_scale
    10: 0.04 * PEAK,   # after it: constant
    40: 0.04 * PEAK,
}


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=PEAK)


def _learning_rates(scheduler, optimizer, updates: int) -> list[float]:
    """The learning rate each update runs with, stepping as S3PRL's runner does (optimizer, then scheduler)."""
    rates = []
    for _ in range(updates):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.s3prl  # also on the compat stack
def test_s3prl_get_scheduler_finds_tri_stage_through_the_launcher(monkeypatch):
    import s3prl.schedulers

    monkeypatch.delattr(s3prl.schedulers, "get_tri_stage_schedule", raising=False)
    assert launcher.register_schedulers() == ["get_tri_stage_schedule"]
    optimizer = _optimizer()
    scheduler = s3prl.schedulers.get_scheduler(optimizer, 40, {"name": "tri_stage_schedule", **STAGES})
    rates = _learning_rates(scheduler, optimizer, 41)
    for step, expected in EXPECTED.items():
        assert rates[step] == pytest.approx(expected, rel=1e-12), step


@pytest.mark.s3prl  # also on the compat stack
def test_register_downstreams_registers_the_scheduler_too(monkeypatch):
    import s3prl.schedulers

    monkeypatch.delattr(s3prl.schedulers, "get_tri_stage_schedule", raising=False)
    launcher.register_downstreams()
    assert s3prl.schedulers.get_tri_stage_schedule is get_tri_stage_schedule


def test_resuming_continues_the_schedule():
    """S3PRL saves the scheduler's state; a scheduler rebuilt from it goes on at the same update."""
    optimizer = _optimizer()
    scheduler = get_tri_stage_schedule(optimizer, 40, **STAGES)
    _learning_rates(scheduler, optimizer, 8)
    state = scheduler.state_dict()
    resumed_optimizer = _optimizer()
    resumed = get_tri_stage_schedule(resumed_optimizer, 40, **STAGES)
    resumed.load_state_dict(state)
    resumed_optimizer.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]
    assert _learning_rates(resumed, resumed_optimizer, 2) == pytest.approx([EXPECTED[8], EXPECTED[9]], rel=1e-12)


def test_the_paper_schedule_at_its_boundaries():
    """The shipped paper config: warm-up 30k from 0.01, hold 90k, decay 120k to 0.01 (PAPERS.md)."""
    from recycle_distill.s3prl.superb.launcher import CONFIG_DIR

    config = safe_load_bounded((CONFIG_DIR / "cif_asr_paper.yaml").read_text())["scheduler"]
    assert config.pop("name") == "tri_stage_schedule"
    assert config == {"warmup_steps": 30000, "hold_steps": 90000, "decay_steps": 120000,
                      "init_lr_scale": 0.01, "final_lr_scale": 0.01}
    assert tri_stage_factor(0, **config) == pytest.approx(0.01)
    assert tri_stage_factor(15000, **config) == pytest.approx(0.505)  # 0.01 + 0.99 / 2
    assert tri_stage_factor(30000, **config) == 1.0
    assert tri_stage_factor(119999, **config) == 1.0
    assert tri_stage_factor(180000, **config) == pytest.approx(0.1)  # halfway: sqrt(0.01)
    assert tri_stage_factor(240000, **config) == pytest.approx(0.01)
    assert tri_stage_factor(300000, **config) == pytest.approx(0.01)


def test_empty_stages_are_skipped():
    assert tri_stage_factor(0, 0, 2, 0) == 1.0  # no warm-up: starts at the peak
    assert tri_stage_factor(2, 0, 2, 0) == pytest.approx(0.01)  # no decay: the floor after the hold
    assert tri_stage_factor(1, 0, 0, 4, final_lr_scale=0.0625) == pytest.approx(0.5)  # 0.0625 ** (1/4)


@pytest.mark.parametrize("key, value, wanted", [
    ("warmup_steps", -1, "scheduler.warmup_steps: a whole number of updates >= 0, got -1"),
    ("hold_steps", 2.5, "scheduler.hold_steps: a whole number of updates >= 0, got 2.5"),
    ("decay_steps", "10", "scheduler.decay_steps: a whole number of updates >= 0, got '10'"),
    ("init_lr_scale", 0.0, "scheduler.init_lr_scale: a fraction of the peak learning rate in (0, 1], got 0.0"),
    ("final_lr_scale", 1.5, "scheduler.final_lr_scale: a fraction of the peak learning rate in (0, 1], got 1.5"),
    ("final_lr_scale", math.nan, "scheduler.final_lr_scale: a fraction of the peak learning rate in (0, 1], got nan"),
])
def test_bad_stage_values_are_refused_by_key(key, value, wanted):
    with pytest.raises(ConfigError) as caught:
        get_tri_stage_schedule(_optimizer(), 40, **{**STAGES, key: value})
    assert str(caught.value) == wanted


def test_stages_longer_than_the_run_are_logged(caplog):
    with caplog.at_level("WARNING"):
        get_tri_stage_schedule(_optimizer(), 5, **STAGES)
    assert "warm-up + hold + decay = 9 updates, more than the 5 of the run" in caplog.text
