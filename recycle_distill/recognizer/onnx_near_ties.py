"""The few utterances whose CIF decisions the loop-free graph cannot settle, settled in NumPy.

The exported CIF decides every firing with the closed form (exact running sums, float32-rounded
comparisons; :mod:`.onnx_cif`). The PyTorch CIF does the same, except for an utterance with a
running value within the original float32 loop's rounding error of a threshold: that one it
decides with the loop itself (``cif_asr/firing_rule.py``), which a loop-free graph cannot hold.
The runner therefore checks every utterance with :func:`firing_decisions` on the graph's CIF
weights and, where the loop decides otherwise than the closed form (rare: weights on a decimal
grid, exact float32 ties), integrates that utterance again here from the encoder output the
graph also returns, with the loop's decisions. NumPy only.
"""

from __future__ import annotations

import numpy as np

from recycle_distill.downstreams.cif_asr.firing_rule import closed_form_counts, firing_decisions

__all__ = ["integrate", "settle_near_ties"]

_TAIL_EPS = 1e-10  # as cif.py: added to the leftover before the tail rescale


def integrate(hidden: np.ndarray, alpha: np.ndarray, counts: np.ndarray, tail: bool) -> np.ndarray:
    """One utterance's CIF vectors from given decisions, as ``continuous_integrate_and_fire``.

    Args:
        hidden: (T, C) float32 encoder output of the valid frames; alpha: (T,) their weights.
        counts: (T,) int64 firings up to each frame; tail: whether the leftover is emitted.

    Returns:
        (max(1, counts[-1] + tail), C) float32 (one zero row when nothing is emitted).
    """
    weights = alpha.astype(np.float64)
    cumulative = np.cumsum(weights)
    previous_counts = np.concatenate([[0], counts[:-1]])
    previous_cumulative = np.concatenate([[0.0], cumulative[:-1]])
    fired = counts > previous_counts
    # A firing frame gives (1 - leftover) to the integration it completes and the rest to the next.
    completing = np.where(fired, counts - previous_cumulative, weights)
    starting = np.where(fired, weights - completing, 0.0)
    total = int(counts[-1])
    rows = np.zeros((total + 1, hidden.shape[1]), dtype=np.float32)  # + the integration still open
    np.add.at(rows, previous_counts, hidden * completing.astype(np.float32)[:, None])
    np.add.at(rows, counts, hidden * starting.astype(np.float32)[:, None])
    if tail:
        rows[total] *= np.float32(1.0 / (cumulative[-1] - total + _TAIL_EPS))
    emitted = total + int(tail)
    return rows[:emitted] if emitted else np.zeros((1, hidden.shape[1]), dtype=np.float32)


def settle_near_ties(cif: np.ndarray, cif_lengths: np.ndarray, hidden: np.ndarray, alpha: np.ndarray,
                     frame_lengths: np.ndarray, threshold: float,
                     tail_threshold: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The graph's CIF output with every utterance the loop decides otherwise integrated again.

    Args:
        cif: (B, N, C) the graph's vectors; cif_lengths: (B,).
        hidden: (B, T, C) encoder output; alpha: (B, T) weights; frame_lengths: (B,) valid frames.
        threshold, tail_threshold: the recognizer's.

    Returns:
        (cif (B, N', C), cif_lengths (B,), the rows integrated again).
    """
    redone: dict[int, np.ndarray] = {}
    for row in range(len(cif)):
        weights = alpha[row, : frame_lengths[row]]
        counts, tail = firing_decisions(weights, threshold, tail_threshold)
        closed = closed_form_counts(np.cumsum(weights.astype(np.float64)), threshold)
        leftover = float(np.sum(weights.astype(np.float64))) - int(closed[-1]) if len(closed) else 0.0
        closed_tail = len(closed) > 0 and bool(np.float32(leftover) > np.float32(tail_threshold))
        if not np.array_equal(counts, closed) or tail != closed_tail:
            redone[row] = integrate(hidden[row, : frame_lengths[row]], weights, counts, tail)
    if not redone:
        return cif, cif_lengths, []
    cif_lengths = cif_lengths.copy()
    for row, vectors in redone.items():
        cif_lengths[row] = len(vectors)
    width = int(cif_lengths.max())
    settled = np.zeros((len(cif), width, cif.shape[2]), dtype=np.float32)
    settled[:, : min(width, cif.shape[1])] = cif[:, :width]
    for row, vectors in redone.items():
        settled[row] = 0.0
        settled[row, : len(vectors)] = vectors
    return settled, cif_lengths, sorted(redone)
