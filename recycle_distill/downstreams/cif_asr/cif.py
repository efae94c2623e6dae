"""Continuous integrate-and-fire (CIF) and its weight predictor, without a loop over frames.

The rules reproduced here (firing at 0.99, a firing consumes exactly 1.0 of weight, at most one
firing per frame, float32-rounded thresholds, tail handling, the all-zero row of an utterance
that fires nothing) are written down in ``docs/cif.md``; the section numbers below refer to it.

How the loop is removed (``docs/cif.md`` section "Closed form"): with ``S_t`` the running sum of
the weights and ``F_t`` the number of firings up to frame ``t``, the leftover weight is
``w_t = S_t - F_t``, and frame ``t`` fires when ``S_t - F_{t-1} >= threshold``. Writing
``D_t = floor(S_t - threshold) + 1`` (the firings an unconstrained integrator would have made),
the one-firing-per-frame rule is the recurrence ``F_t = min(D_t, F_{t-1} + 1)``, whose solution
is ``F_t = t + min(1, min_{k<=t} (D_k - k))``: a cumulative minimum. Each frame then gives its
weight to at most two integrations (the one it completes and the one it starts), which two
``index_add`` calls collect. Decisions follow the original's float32 loop (``docs/cif.md``
section 1): the running sums are float64 (exact for float32 weights) and each decision compares
the float32 rounding of the exact value with the float32-rounded threshold; an utterance with a
value within the loop's possible rounding error of a threshold (an exact float32 tie such as
0.2 + 0.25 = 0.45 at a 0.45 tail threshold) is decided by the loop itself
(:mod:`.firing_rule`), over that utterance alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from recycle_distill.downstreams.cif_asr.firing_rule import rounding_bound, sequential_firings

__all__ = ["CifOutput", "CifWeightPredictor", "continuous_integrate_and_fire"]

# Added to the weight sum before scaling and to the leftover before the tail rescale, as the
# original does; both only matter for (near) all-zero weights.
_SCALE_EPS = 1e-8
_TAIL_EPS = 1e-10


@dataclass
class CifOutput:
    """What :func:`continuous_integrate_and_fire` returns.

    Attributes:
        fired: (B, N, C) integrated vectors, left-aligned, zero rows on padding.
        fired_padding_mask: (B, N) bool, True = padding.
        fired_lengths: (B,) int64 number of valid rows (1 for an utterance that fired nothing).
        alpha_sum: (B,) sum of the unscaled weights (the quantity loss compares it to the target length).
        num_fires: (B,) int64 true number of emitted vectors (0 for an utterance that fired nothing).
    """

    fired: torch.Tensor
    fired_padding_mask: torch.Tensor
    fired_lengths: torch.Tensor
    alpha_sum: torch.Tensor
    num_fires: torch.Tensor


def _as_float32(value: float) -> float:
    """``value`` rounded to float32, as a Python float (the original compares in float32)."""
    return float(np.float32(value))


def _firing_counts(cumulative: torch.Tensor, threshold: float) -> torch.Tensor:
    """Running firing count ``F_t`` from the running weight sum ``S_t``.

    The ``k``-th firing is reached at frame ``t`` when ``float32(S_t - (k - 1)) >= threshold``
    (the original compares its float32 accumulator). In real arithmetic that is
    ``k <= floor(S_t - threshold) + 1``; rounding to float32 can only lift a value just below the
    threshold onto it, so at most one more firing is reached
    (:func:`.firing_rule.closed_form_counts` states the same rule in NumPy).

    Args:
        cumulative: (B, T) float64 running sums of non-negative weights.
        threshold: the float32-rounded firing threshold.

    Returns:
        (B, T) int64: firings made up to and including each frame.
    """
    unconstrained = torch.floor(cumulative - threshold).to(torch.int64) + 1
    # The next firing's value S_t - D_t is below the threshold in real arithmetic; a float32 tie reaches it.
    unconstrained = unconstrained + ((cumulative - unconstrained).to(torch.float32) >= threshold).to(torch.int64)
    unconstrained = unconstrained.clamp_min(0)
    frames = torch.arange(cumulative.shape[1], device=cumulative.device)
    slack = torch.cummin(unconstrained - frames, dim=1).values
    return frames + torch.clamp(slack, max=1)


def _settle_near_ties(alpha: torch.Tensor, cumulative: torch.Tensor, fires: torch.Tensor, processed: torch.Tensor,
                      last_frame: torch.Tensor, threshold: float,
                      tail_threshold: Optional[float]) -> tuple[torch.Tensor, dict[int, bool]]:
    """The loop's decisions for the utterances the closed form cannot settle.

    An utterance is unsettled when a running value ``S_t - F_{t-1}`` (or, with a tail, the
    leftover) lies within :func:`.firing_rule.rounding_bound` of its threshold; its firing
    counts are then replaced by :func:`.firing_rule.sequential_firings` over its processed
    frames (the same test as :func:`.firing_rule.firing_decisions`).

    Args:
        alpha: (B, T) weights; cumulative: (B, T) float64 running sums; fires: (B, T) counts.
        processed: (B, T) bool, the frames the original processes; last_frame: (B,) the last of them.

    Returns:
        ((B, T) counts, {row: tail emitted} for the rows decided by the loop).
    """
    frames = torch.arange(alpha.shape[1], device=alpha.device, dtype=torch.float64).unsqueeze(0)
    alpha_max = alpha.detach().to(torch.float64).masked_fill(~processed, 0.0).amax(dim=1, keepdim=True)
    previous = F.pad(fires, (1, 0))[:, :-1]
    bound = rounding_bound(frames, previous.to(torch.float64), alpha_max)  # (B, T)
    near = ((cumulative - previous - _as_float32(threshold)).abs() <= bound) & processed
    unsettled = near.any(dim=1)
    if tail_threshold is not None:
        last = last_frame.unsqueeze(1)
        leftover = (cumulative.gather(1, last) - fires.gather(1, last)).squeeze(1)
        unsettled |= (leftover - _as_float32(tail_threshold)).abs() <= bound.gather(1, last).squeeze(1)
    if not bool(unsettled.any()):
        return fires, {}
    fires, tails = fires.clone(), {}
    for row in torch.nonzero(unsettled).flatten().tolist():
        count = int(last_frame[row]) + 1
        counts, tails[row] = sequential_firings(alpha[row, :count].detach().float().cpu().numpy(), threshold,
                                                tail_threshold)
        fires[row, :count] = torch.from_numpy(counts).to(fires.device)
        fires[row, count:] = int(counts[-1])  # unprocessed frames give nothing; keep their rows in range
    return fires, tails


def continuous_integrate_and_fire(
    hidden: torch.Tensor,
    alpha: torch.Tensor,
    padding_mask: torch.Tensor,
    target_lengths: Optional[torch.Tensor] = None,
    threshold: float = 0.99,
    tail_threshold: Optional[float] = None,
    legacy_tail: bool = False,
) -> CifOutput:
    """Integrate ``hidden`` frames by their weights ``alpha`` and fire a vector per unit of weight.

    Args:
        hidden: (B, T, C) encoder output.
        alpha: (B, T) non-negative weights, zero on padded frames (``docs/cif.md`` section 1).
        padding_mask: (B, T) bool, True = padded frame.
        target_lengths: (B,) int64 target lengths (end-of-sentence included). When given, the
            weights are scaled so each utterance fires that many times (training, section 3).
        threshold: firing threshold on the accumulated weight (0.99).
        tail_threshold: when given, a leftover weight above it is emitted at the end of each
            utterance, rescaled to unit weight (inference, section 5).
        legacy_tail: reproduce the original, which applies the tail only to utterances that
            have padding (so never to the longest of a batch). Ignored without ``tail_threshold``.

    Returns:
        :class:`CifOutput`. Differentiable in ``alpha`` and ``hidden``.
    """
    if hidden.dim() != 3 or alpha.shape != hidden.shape[:2] or padding_mask.shape != alpha.shape:
        raise ValueError(f"expected hidden (B, T, C), alpha (B, T), padding_mask (B, T); got "
                         f"{tuple(hidden.shape)}, {tuple(alpha.shape)}, {tuple(padding_mask.shape)}")
    batch, _, channels = hidden.shape
    padding_mask = padding_mask.to(torch.bool)
    alpha_sum = alpha.sum(dim=1)

    if target_lengths is not None:
        # Division before multiplication, in the weights' dtype, as section 3 records.
        ratio = target_lengths.to(alpha.dtype) / (alpha_sum + _SCALE_EPS)
        alpha = alpha * ratio.unsqueeze(1)

    with_tail = tail_threshold is not None
    if with_tail and not legacy_tail:
        # Every utterance gets its tail step: one extra padded frame (hidden 0, weight 0).
        hidden = F.pad(hidden, (0, 0, 0, 1))
        alpha = F.pad(alpha, (0, 1))
        padding_mask = F.pad(padding_mask, (0, 1), value=True)
    frames = alpha.shape[1]

    # Frames up to the first padded one are processed; outputs of later frames are dropped (section 4).
    num_valid = (~padding_mask).sum(dim=1)
    last_frame = num_valid.clamp(max=frames - 1)
    frame_index = torch.arange(frames, device=alpha.device)
    processed = frame_index.unsqueeze(0) <= last_frame.unsqueeze(1)

    weights = alpha.to(torch.float64)
    cumulative = torch.cumsum(weights, dim=1)
    with torch.no_grad():
        fires = _firing_counts(cumulative.detach(), _as_float32(threshold))
        fires, loop_tails = _settle_near_ties(alpha, cumulative.detach(), fires, processed, last_frame, threshold,
                                              tail_threshold if with_tail else None)
    previous_fires = F.pad(fires, (1, 0))[:, :-1]
    previous_cumulative = F.pad(cumulative, (1, 0))[:, :-1]
    fired_here = fires > previous_fires

    # A firing frame gives (1 - leftover) to the integration it completes and the rest to the next.
    completing = torch.where(fired_here, fires.to(torch.float64) - previous_cumulative, weights)
    starting = torch.where(fired_here, weights - completing, torch.zeros_like(weights))
    completing = completing * processed
    starting = starting * processed

    counts = fires.gather(1, last_frame.unsqueeze(1)).squeeze(1)  # firings up to the last processed frame
    rows = int(counts.max().item()) + 1  # + the integration still open (its content is the tail)
    # Rows of all utterances stacked as (B * rows, C): index_add_ adds whole C-vectors at once.
    offsets = (torch.arange(batch, device=hidden.device) * rows).unsqueeze(1)
    integrated = hidden.new_zeros(batch * rows, channels)
    for row_index, share in ((previous_fires, completing), (fires, starting)):
        flat_index = (row_index.clamp(max=rows - 1) + offsets).reshape(-1)
        weighted = hidden * share.to(hidden.dtype).unsqueeze(-1)
        integrated = integrated.index_add(0, flat_index, weighted.reshape(-1, channels))
    integrated = integrated.view(batch, rows, channels)

    num_fires = counts
    if with_tail:
        leftover = cumulative.gather(1, last_frame.unsqueeze(1)).squeeze(1) - counts.to(torch.float64)
        reaches_tail = num_valid < frames  # legacy: only utterances with a padded frame
        # Compared as the original's float32 leftover: 0.2 + 0.25 is exactly float32(0.45), not above it.
        above = leftover.detach().to(torch.float32) > _as_float32(tail_threshold)
        for row, tail in loop_tails.items():
            above[row] = tail
        emit = reaches_tail & above
        scale = torch.where(emit, 1.0 / (leftover + _TAIL_EPS), torch.zeros_like(leftover)).to(hidden.dtype)
        open_rows = counts.unsqueeze(1)
        rescaled = integrated.gather(1, open_rows.unsqueeze(-1).expand(-1, -1, channels)) * scale.view(-1, 1, 1)
        keep = torch.arange(rows, device=hidden.device).unsqueeze(0) < open_rows
        integrated = integrated * keep.unsqueeze(-1).to(hidden.dtype)
        integrated = integrated.scatter_add(1, open_rows.unsqueeze(-1).expand(-1, -1, channels), rescaled)
        num_fires = counts + emit.to(torch.int64)

    fired_lengths = num_fires.clamp(min=1)  # nothing fired: one valid all-zero row (section 8)
    positions = torch.arange(int(fired_lengths.max().item()), device=hidden.device).unsqueeze(0)
    fired_padding_mask = positions >= fired_lengths.unsqueeze(1)
    valid_rows = (positions < num_fires.unsqueeze(1)).unsqueeze(-1).to(hidden.dtype)
    fired = integrated[:, : positions.shape[1]] * valid_rows
    return CifOutput(fired, fired_padding_mask, fired_lengths, alpha_sum, num_fires)


class CifWeightPredictor(nn.Module):
    """The CIF weight predictor: Conv1d (kernel 3) -> dropout -> Linear to 1 -> sigmoid.

    There is no activation between the convolution and the linear layer (``docs/cif.md``
    section "Weight predictor"). Weights on padded frames are set to 0.

    The original convolves the padded encoder output as it is, so the last valid frame's weight
    depends on whatever the padded frames hold, i.e. on what the utterance is batched with. By
    default padded frames are zeroed before the convolution, which makes an utterance's weights
    independent of its batch; ``isolate_padding=False`` reproduces the original.

    Args:
        in_dim: C, the encoder width.
        channels: convolution output channels (default ``in_dim``).
        kernel_size: convolution width (odd; "same" padding).
        dropout: dropout between the convolution and the linear layer.
        isolate_padding: zero padded frames before the convolution (see above).
    """

    def __init__(self, in_dim: int, channels: Optional[int] = None, kernel_size: int = 3, dropout: float = 0.2,
                 isolate_padding: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        channels = channels or in_dim
        self.conv = nn.Conv1d(in_dim, channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.weight_proj = nn.Linear(channels, 1)
        self.isolate_padding = isolate_padding

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            hidden: (B, T, C).
            padding_mask: (B, T) bool, True = padded frame.

        Returns:
            (B, T) weights in [0, 1], exactly 0 on padded frames.
        """
        if self.isolate_padding:
            hidden = hidden.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = self.conv(hidden.transpose(1, 2)).transpose(1, 2)
        alpha = torch.sigmoid(self.weight_proj(self.dropout(x)).squeeze(-1))
        return alpha.masked_fill(padding_mask, 0.0)
