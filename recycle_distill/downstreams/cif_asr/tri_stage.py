"""The tri-stage learning-rate schedule of the original CIF-HieraDist recipe (fairseq's ``tri_stage``).

Three stages, then a floor, as factors of the optimizer's peak learning rate ``lr``:

* warm-up, ``warmup_steps`` updates: linear from ``init_lr_scale * lr`` towards ``lr``;
* hold, ``hold_steps`` updates: ``lr``;
* decay, ``decay_steps`` updates: ``lr * exp(-k * t)`` with ``k = -ln(final_lr_scale) / decay_steps``,
  so it reaches ``final_lr_scale * lr`` at ``t = decay_steps``;
* after that: ``final_lr_scale * lr``.

Stage boundaries as fairseq's ``_decide_stage``: update ``warmup_steps`` is the first of the hold,
``warmup_steps + hold_steps`` the first of the decay (factor 1), and the decay includes its last
update ``warmup_steps + hold_steps + decay_steps`` (factor ``final_lr_scale``).

S3PRL's ``s3prl/schedulers.py::get_scheduler`` calls ``get_<name>(optimizer,
num_training_steps=total_steps, **config)`` in that module's namespace, so
``scheduler: {name: tri_stage_schedule, warmup_steps: ..., hold_steps: ..., decay_steps: ...}``
finds :func:`get_tri_stage_schedule` once it is an attribute of ``s3prl.schedulers`` (our launcher
sets it; ``patch_hub.py`` imports it into a patched checkout's ``schedulers.py``).
"""

from __future__ import annotations

import logging
import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from recycle_distill.util.config_check import ConfigError, Range, is_number

__all__ = ["get_tri_stage_schedule", "tri_stage_factor"]

logger = logging.getLogger(__name__)

SECTION = "scheduler"
SCALE = Range(0.0, 1.0, low_closed=False)  # a scale of the peak: the decay's logarithm needs > 0


def _check(warmup_steps, hold_steps, decay_steps, init_lr_scale, final_lr_scale) -> None:
    """Refuse a stage length that is not a whole number >= 0 or a scale outside (0, 1]."""
    for key, value in (("warmup_steps", warmup_steps), ("hold_steps", hold_steps), ("decay_steps", decay_steps)):
        if not is_number(value, integer=True, within=Range(0)):
            raise ConfigError(f"{SECTION}.{key}: a whole number of updates >= 0, got {value!r}")
    for key, value in (("init_lr_scale", init_lr_scale), ("final_lr_scale", final_lr_scale)):
        if not is_number(value, within=SCALE):
            raise ConfigError(f"{SECTION}.{key}: a fraction of the peak learning rate in {SCALE}, got {value!r}")


def tri_stage_factor(step: int, warmup_steps: int, hold_steps: int, decay_steps: int,
                     init_lr_scale: float = 0.01, final_lr_scale: float = 0.01) -> float:
    """The learning rate at update ``step`` as a fraction of the peak (see the module docstring).

    A stage of length 0 is skipped (no warm-up starts at the peak; no decay drops straight to
    ``final_lr_scale * lr`` after the hold).
    """
    _check(warmup_steps, hold_steps, decay_steps, init_lr_scale, final_lr_scale)
    return _factor(step, warmup_steps, hold_steps, decay_steps, init_lr_scale, final_lr_scale)


def _factor(step: int, warmup_steps: int, hold_steps: int, decay_steps: int, init_lr_scale: float,
            final_lr_scale: float) -> float:
    """:func:`tri_stage_factor` on checked arguments (the scheduler calls it every update)."""
    if step < warmup_steps:
        return init_lr_scale + (1.0 - init_lr_scale) * step / warmup_steps
    step -= warmup_steps
    if step < hold_steps:
        return 1.0
    step -= hold_steps
    if step <= decay_steps and decay_steps > 0:
        return math.exp(math.log(final_lr_scale) * step / decay_steps)
    return float(final_lr_scale)


def get_tri_stage_schedule(optimizer: torch.optim.Optimizer, num_training_steps: int, warmup_steps: int,
                           hold_steps: int, decay_steps: int, init_lr_scale: float = 0.01,
                           final_lr_scale: float = 0.01, last_epoch: int = -1) -> LambdaLR:
    """S3PRL's scheduler contract for ``scheduler: {name: tri_stage_schedule, ...}``.

    Args:
        optimizer: its learning rate(s) are the peak.
        num_training_steps: S3PRL's ``runner.total_steps``; the stages do not depend on it (as in
            fairseq, where they are given in updates), it only decides a log line when they end
            after the run does.
        warmup_steps, hold_steps, decay_steps: the stage lengths in updates.
        init_lr_scale, final_lr_scale: where the warm-up starts and the decay ends, as fractions
            of the peak.
        last_epoch: the last update done when resuming (LambdaLR's argument).
    """
    _check(warmup_steps, hold_steps, decay_steps, init_lr_scale, final_lr_scale)
    stages = int(warmup_steps) + int(hold_steps) + int(decay_steps)
    if num_training_steps is not None and stages > num_training_steps:
        logger.warning("tri-stage schedule: warm-up + hold + decay = %d updates, more than the %d of the run; "
                       "the run ends inside the schedule", stages, num_training_steps)

    def factor(step: int) -> float:
        return _factor(step, warmup_steps, hold_steps, decay_steps, init_lr_scale, final_lr_scale)

    return LambdaLR(optimizer, factor, last_epoch)
