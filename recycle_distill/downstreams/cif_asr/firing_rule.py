"""The CIF's firing and tail decisions as the original's float32 loop makes them (NumPy, no torch).

The original keeps per utterance a float32 accumulated weight ``w`` (from 0); frame ``t`` with
weight ``a`` fires when ``float32(w + a) >= float32(threshold)``; a firing leaves
``w = float32(a - float32(1 - w))``, otherwise ``w = float32(w + a)``; at the tail step the
leftover is emitted when ``w > float32(tail_threshold)`` (``docs/cif.md`` section 1).

The loop-free CIF (:mod:`.cif`) decides from exact (float64) running sums instead, comparing
the float32 rounding of the exact value with the threshold. The loop's ``w`` differs from the
exact value only by its own rounding errors, at most :func:`rounding_bound` after ``t``
frames, so wherever every exact value lies farther than that from its threshold both decide
alike. An utterance with a value closer than that (an exact float32 tie at 0.99 or at the tail
threshold, weights on a decimal grid) is decided by :func:`sequential_firings`, the loop
itself, over that utterance alone. :func:`firing_decisions` does both for one utterance; the
token times (:mod:`recycle_distill.recognizer.token_times`, also used by the torch-free ONNX
runner) decide with it, and ``tests/downstreams/test_cif_float32.py`` checks it against the
torch CIF and the loop.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["UNIT_ROUNDOFF", "closed_form_counts", "firing_decisions", "rounding_bound", "sequential_firings"]

UNIT_ROUNDOFF = 2.0 ** -24  # float32 round to nearest: |float32(x) - x| <= UNIT_ROUNDOFF * |x|


def rounding_bound(frames, previous_counts, alpha_max: float):
    """How far the loop's float32 ``w + a`` at frame ``t`` (0-based) can lie from the exact value,
    plus the width of the threshold's rounding zone (NumPy arrays or torch tensors).

    A frame that does not fire stores ``float32(w + a)``, which is below the threshold (< 1), so
    it rounds by at most ``UNIT_ROUNDOFF / 2``; a firing rounds twice (``1 - w``, then
    ``a - r``), values below ``2 * max(1, alpha_max)``, so by at most
    ``2 * UNIT_ROUNDOFF * max(1, alpha_max)`` each; errors carry on unchanged. Before frame
    ``t`` at most ``t`` frames stored a value, ``previous_counts[t]`` of them firings:
    ``UNIT_ROUNDOFF * (t / 2 + 4 * max(1, alpha_max) * (previous_counts[t] + 1) + 1)`` covers
    them, one firing more, and the final comparison's rounding.
    """
    # A Python number for one utterance (NumPy), a (B, 1) tensor for a batch (torch).
    scale = 4.0 * (max(1.0, alpha_max) if isinstance(alpha_max, (int, float)) else alpha_max.clamp(min=1.0))
    return UNIT_ROUNDOFF * (0.5 * frames + scale * (previous_counts + 1.0) + 1.0)


def sequential_firings(alpha, threshold: float = 0.99,
                       tail_threshold: Optional[float] = None) -> tuple[np.ndarray, bool]:
    """The original's loop over one utterance: ((T,) int64 firings up to and including each
    frame, whether the leftover after the last frame is emitted as a tail)."""
    weights = np.asarray(alpha, dtype=np.float32).reshape(-1)
    fire_at, one = np.float32(threshold), np.float32(1.0)
    w = np.float32(0.0)
    counts = np.zeros(weights.shape[0], dtype=np.int64)
    fired = 0
    for t, a in enumerate(weights):
        total = np.float32(w + a)
        if total >= fire_at:
            w = np.float32(a - np.float32(one - w))
            fired += 1
        else:
            w = total
        counts[t] = fired
    return counts, tail_threshold is not None and bool(w > np.float32(tail_threshold))


def closed_form_counts(cumulative: np.ndarray, threshold: float) -> np.ndarray:
    """Firing counts from exact running sums (the rule of :func:`.cif._firing_counts`).

    Args:
        cumulative: (T,) float64 running sums of the float32 weights.
        threshold: the firing threshold (compared as its float32 rounding).
    """
    threshold = float(np.float32(threshold))
    unconstrained = np.floor(cumulative - threshold).astype(np.int64) + 1
    # The next firing's value S_t - D_t is below the threshold in real arithmetic; a float32 tie reaches it.
    unconstrained += ((cumulative - unconstrained).astype(np.float32) >= np.float32(threshold)).astype(np.int64)
    unconstrained = np.maximum(unconstrained, 0)
    frames = np.arange(len(cumulative))
    slack = np.minimum.accumulate(unconstrained - frames) if len(frames) else unconstrained
    return frames + np.minimum(slack, 1)


def firing_decisions(alpha, threshold: float = 0.99,
                     tail_threshold: Optional[float] = None) -> tuple[np.ndarray, bool]:
    """The decisions of the loop for one utterance, as the loop-free CIF reaches them: the
    closed form, or the loop where a value lies within :func:`rounding_bound` of a threshold.

    Returns:
        ((T,) int64 running firing counts, tail emitted or not).
    """
    weights = np.asarray(alpha, dtype=np.float32).reshape(-1)
    if not len(weights):
        return np.zeros(0, dtype=np.int64), False
    cumulative = np.cumsum(weights.astype(np.float64))  # exact for float32 weights
    counts = closed_form_counts(cumulative, threshold)
    previous = np.concatenate([[0], counts[:-1]])
    bound = rounding_bound(np.arange(len(weights), dtype=np.float64), previous.astype(np.float64), float(weights.max()))
    uncertain = bool((np.abs(cumulative - previous - float(np.float32(threshold))) <= bound).any())
    leftover = float(cumulative[-1]) - int(counts[-1])
    if tail_threshold is not None:
        uncertain |= abs(leftover - float(np.float32(tail_threshold))) <= float(bound[-1])
    if uncertain:
        return sequential_firings(weights, threshold, tail_threshold)
    return counts, tail_threshold is not None and bool(np.float32(leftover) > np.float32(tail_threshold))
