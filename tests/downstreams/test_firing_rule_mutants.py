"""The NumPy firing rule (``cif_asr/firing_rule.py``) beyond the torch comparison of
``test_cif_float32.py``: its outputs' dtypes and shapes, the closed form at a float32 tie and for
weights above 1, and which utterances :func:`firing_decisions` hands to the loop (the closed form
and the loop agree away from ties, so only a spy on the loop sees that choice).

Written for the survivors of mutation testing (docs/development.md, Mutation testing); every
expected value is worked out by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recycle_distill.downstreams.cif_asr import firing_rule
from recycle_distill.downstreams.cif_asr.firing_rule import closed_form_counts, firing_decisions, sequential_firings

F32 = np.float32
ULP_HALF = 2.0 ** -24  # the float32 spacing just above 0.5 is 2**-24


@pytest.fixture
def loop_calls(monkeypatch):
    """Records each call of the loop that :func:`firing_decisions` falls back to (and still runs it)."""
    calls = []
    real = firing_rule.sequential_firings

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(firing_rule, "sequential_firings", spy)
    return calls


def test_loop_default_threshold_is_0_99():
    # 0.5 + 0.5 = 1.0 >= 0.99 fires at the second frame; the leftover 0.0 is no tail.
    counts, tail = sequential_firings(np.array([0.5, 0.5], dtype=np.float32))
    assert counts.tolist() == [0, 1] and counts.dtype == np.int64 and tail is False


def test_rounding_bound_by_hand():
    # 2**-24 * (frames / 2 + 4 * max(1, alpha_max) * (previous + 1) + 1)
    assert firing_rule.rounding_bound(10.0, 3.0, 2.5) == ULP_HALF * (5 + 4 * 2.5 * 4 + 1)
    assert firing_rule.rounding_bound(10.0, 3.0, 0.5) == ULP_HALF * (5 + 4 * 1 * 4 + 1)
    # the batched form: (B, 1) largest weights, clamped to at least 1 the same way
    batched = firing_rule.rounding_bound(torch.tensor([[10.0]]), torch.tensor([[3.0]]), torch.tensor([[2.5], [0.5]]))
    assert batched.flatten().tolist() == [ULP_HALF * 46, ULP_HALF * 22]


def test_a_row_shaped_utterance_decides_like_a_flat_one():
    flat = np.array([0.5, 0.6, 0.2], dtype=np.float32)
    for rule in (sequential_firings, firing_decisions):
        counts, tail = rule(flat[None, :], 0.99, 0.5)
        assert counts.shape == (3,) and counts.tolist() == [0, 1, 1] and tail is False


def test_an_empty_utterance_has_no_firing_and_no_tail():
    counts, tail = firing_decisions(np.zeros(0, dtype=np.float32), tail_threshold=0.5)
    assert counts.shape == (0,) and counts.dtype == np.int64 and tail is False


def test_closed_form_counts_are_int64():
    counts = closed_form_counts(np.cumsum(np.array([0.5, 0.6], dtype=np.float64)), 0.99)
    assert counts.dtype == np.int64 and counts.tolist() == [0, 1]


def test_closed_form_fires_on_a_float32_tie():
    # Exactly 1e-10 below float32(0.99) is not a firing in real arithmetic, but its float32
    # rounding is float32(0.99), which the loop compares: it fires.
    below = float(F32(0.99)) - 1e-10
    assert below < float(F32(0.99)) and F32(below) == F32(0.99)
    assert closed_form_counts(np.array([below]), 0.99).tolist() == [1]


def test_closed_form_fires_at_most_once_per_frame():
    # 2.5 fires once (leftover 1.5), then 1.5 + 0.1 fires once more: the loop's [1, 2].
    weights = np.array([2.5, 0.1], dtype=np.float32)
    assert sequential_firings(weights)[0].tolist() == [1, 2]
    assert closed_form_counts(np.cumsum(weights.astype(np.float64)), 0.99).tolist() == [1, 2]


def test_far_from_every_threshold_the_closed_form_decides(loop_calls):
    # Sums 0.5, 1.1 (fires), leftover 0.1: far from 0.99 and from the tail threshold 0.5.
    counts, tail = firing_decisions(np.array([0.5, 0.6], dtype=np.float32), 0.99, 0.5)
    assert counts.tolist() == [0, 1] and tail is False and loop_calls == []


def test_a_firing_tie_at_the_first_frame_goes_to_the_loop(loop_calls):
    counts, tail = firing_decisions(np.array([0.99, 0.3], dtype=np.float32))
    assert len(loop_calls) == 1 and counts.tolist() == [1, 1] and tail is False


def test_a_firing_tie_after_a_firing_goes_to_the_loop(loop_calls):
    # Sums 0.5, 1.0 (fires, 0.01 above 0.99), 1.0 + float32(0.99): one firing behind, a tie.
    counts, _ = firing_decisions(np.array([0.5, 0.5, 0.99], dtype=np.float32), tail_threshold=0.2)
    assert len(loop_calls) == 1 and counts.tolist() == [0, 1, 2]


def test_a_tail_tie_goes_to_the_loop(loop_calls):
    # The leftover 0.5 equals the tail threshold; no firing anywhere near 0.99.
    counts, tail = firing_decisions(np.array([0.25, 0.25], dtype=np.float32), 0.99, 0.5)
    assert len(loop_calls) == 1 and counts.tolist() == [0, 0] and tail is False


def test_the_tail_uses_the_last_frames_bound(loop_calls):
    # 999 frames of 0 then 0.5 + 100 ulp: the leftover lies 100 * 2**-24 above the tail threshold,
    # inside the last frame's bound (2**-24 * (999 / 2 + 4 + 1)) but outside the early frames'.
    weights = np.zeros(1000, dtype=np.float32)
    weights[-1] = F32(0.5 + 100 * ULP_HALF)
    bound = firing_rule.rounding_bound(np.arange(1000.0), np.zeros(1000), float(weights.max()))
    assert bound[1] < 100 * ULP_HALF < bound[-1]
    counts, tail = firing_decisions(weights, 0.99, 0.5)
    assert len(loop_calls) == 1 and int(counts[-1]) == 0 and tail is True


def test_the_tail_leftover_is_after_the_last_frames_firings():
    # Sums 0.5, 1.1: one firing, leftover 0.1, not above 0.5 (1.1 would be).
    assert firing_decisions(np.array([0.5, 0.6], dtype=np.float32), 0.99, 0.5)[1] is False
