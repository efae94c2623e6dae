"""CIF as the original runs it: a Python loop over frames, vectorised over batch and channels.

An independent transcription of the rules in ``docs/cif.md`` (float32 state updated frame by
frame, the legacy tail rule), used as the baseline of B7 and, in ``tests/downstreams/test_cif.py``, as a
second implementation to compare values and gradients against.
"""

from __future__ import annotations

from typing import Optional

import torch


def cif_frame_loop(hidden: torch.Tensor, alpha: torch.Tensor, padding_mask: torch.Tensor,
                   target_lengths: Optional[torch.Tensor] = None, threshold: float = 0.99,
                   tail_threshold: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame-by-frame CIF over (B, T, C) ``hidden`` and (B, T) ``alpha``.

    Returns:
        ``(fired, num_fires)``: (B, N, C) left-aligned outputs (an utterance that fired nothing
        gets one zero row) and (B,) counts.
    """
    batch, frames, channels = hidden.shape
    if target_lengths is not None:
        alpha = alpha * (target_lengths.to(alpha.dtype) / (alpha.sum(dim=1) + 1e-8)).unsqueeze(1)
    num_valid = (~padding_mask).sum(dim=1)
    thr = torch.tensor(threshold, dtype=alpha.dtype)
    tail = None if tail_threshold is None else torch.tensor(tail_threshold, dtype=alpha.dtype)
    weight = alpha.new_zeros(batch)
    state = hidden.new_zeros(batch, channels)
    outputs, flags = [], []
    for t in range(frames):
        a, h = alpha[:, t], hidden[:, t]
        fire = weight + a >= thr
        remain = 1.0 - weight
        out = torch.where(fire.unsqueeze(1), state + remain.unsqueeze(1) * h, torch.zeros_like(state))
        carry = a - remain
        state = torch.where(fire.unsqueeze(1), carry.unsqueeze(1) * h, state + a.unsqueeze(1) * h)
        weight = torch.where(fire, carry, weight + a)
        at_end = num_valid == t
        if tail is not None:
            emit = at_end & (weight > tail)
            out = torch.where(emit.unsqueeze(1), state / (weight + 1e-10).unsqueeze(1), out)
            fire = torch.where(at_end, emit, fire)
        fire = fire & (t <= num_valid)
        outputs.append(out)
        flags.append(fire)
    outputs = torch.stack(outputs, dim=1)
    flags = torch.stack(flags, dim=1)
    num_fires = flags.sum(dim=1)
    width = max(int(num_fires.max()), 1)
    # Left-align: a stable sort puts fired frames first, in time order.
    order = torch.sort((~flags).to(torch.int8), dim=1, stable=True).indices[:, :width]
    fired = outputs.gather(1, order.unsqueeze(-1).expand(-1, -1, channels))
    keep = torch.arange(width).unsqueeze(0) < num_fires.unsqueeze(1)
    return fired * keep.unsqueeze(-1).to(fired.dtype), num_fires
