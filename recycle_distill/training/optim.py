"""AdamW with linear warmup then linear decay to zero (S3PRL's ``AdamW_with_schedule``)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from recycle_distill.training.config import OptimizerSection

__all__ = ["build_optimizer", "warmup_linear_factor"]


def warmup_linear_factor(step: int, total_steps: int, warmup_proportion: float) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based, before the update).

    Rises linearly from 0 to 1 over ``warmup_proportion`` of the run, then falls linearly to 0
    at ``total_steps``, as S3PRL's ``WarmupLinearSchedule`` (progress = step / total).
    """
    if total_steps <= 0:
        return 1.0
    progress = step / total_steps
    if progress < warmup_proportion:
        return progress / warmup_proportion
    return max(0.0, (progress - 1.0) / (warmup_proportion - 1.0))


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], config: OptimizerSection, total_steps: int
) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW and its per-step schedule (call ``scheduler.step()`` after each ``optimizer.step()``)."""
    parameters = list(parameters)
    # The fused kernel updates every tensor in one pass: ~6x faster than the per-tensor loop on CPU.
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in parameters)
    optimizer = torch.optim.AdamW(
        parameters, lr=config.lr, betas=(float(config.betas[0]), float(config.betas[1])),
        eps=config.eps, weight_decay=config.weight_decay, fused=fused,
    )
    warmup = config.warmup_proportion
    scheduler = LambdaLR(optimizer, lambda step: warmup_linear_factor(step, total_steps, warmup))
    return optimizer, scheduler
