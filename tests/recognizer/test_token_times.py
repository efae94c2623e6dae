"""Token times from CIF weights (``recycle_distill.recognizer.token_times``): spans computed by hand,
and the spans equal the frames the CIF itself integrated into each vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recycle_distill.downstreams.cif_asr.cif import continuous_integrate_and_fire
from recycle_distill.recognizer.token_times import MIN_SHARE, integration_frames, token_spans, token_times
from recycle_distill.recognizer.transcript import TokenTime


def test_frames_by_hand():
    # Frame 1 fires with 0.6 + 0.4 (its 0.2 starts the next), frame 3 with 0.2 + 0.6 + 0.2 (its
    # 0.4 starts the tail), the tail 0.4 + 0.5 = 0.9 > 0.5 is emitted.
    alpha = [0.6, 0.6, 0.6, 0.6, 0.5]
    assert integration_frames(alpha, tail_threshold=0.5) == [(0, 1), (1, 3), (3, 4)]
    assert integration_frames(alpha) == [(0, 1), (1, 3)]  # no tail threshold: the leftover is dropped
    assert integration_frames(alpha, tail_threshold=0.95) == [(0, 1), (1, 3)]


def test_slivers_do_not_count():
    # Frame 1 fires with 0.5 + 0.4999 and keeps 0.0004 for the next vector: too little to count.
    assert integration_frames([0.5, 0.5004, 0.6, 0.6], tail_threshold=0.4) == [(0, 1), (2, 3)]
    # A tail of slivers only still gets its frames.
    assert integration_frames([0.0009] * 500, tail_threshold=0.4) == [(0, 499)]


def test_frames_without_weight_do_not_count():
    # Frame 1 fires with exactly 1.0 (nothing left to start the next), frame 2 has no weight:
    # the second vector starts at frame 3. The 0.2 after it stays below the tail threshold.
    assert integration_frames([0.5, 0.5, 0.0, 0.3, 0.7, 0.2], tail_threshold=0.4) == [(0, 1), (3, 4)]
    assert integration_frames([0.1, 0.1], tail_threshold=0.4) == []
    assert integration_frames([], tail_threshold=0.4) == []


def test_seconds_are_frames_times_the_period_clipped_to_the_recording():
    spans = token_spans([0.6, 0.6, 0.6, 0.6, 0.5], frame_seconds=0.08, duration=0.37, tail_threshold=0.5)
    flat = [value for span in spans for value in span]
    assert flat == pytest.approx([0.0, 0.16, 0.08, 0.32, 0.24, 0.37])


def test_tokens_pair_with_vectors_in_order_and_specials_keep_their_place():
    spans = [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)]
    assert token_times(["a", None, "c"], spans) == (TokenTime("a", 0.0, 0.1), TokenTime("c", 0.2, 0.3))
    assert token_times(["a"], spans) == (TokenTime("a", 0.0, 0.1),)
    with pytest.raises(ValueError, match="4 tokens but only 3 CIF vectors"):
        token_times(["a", "b", "c", "d"], spans)


@pytest.mark.parametrize("seed", range(8))
def test_frames_are_those_the_cif_integrated(seed):
    """With frame t's vector e_t, vector k of the CIF holds the weight each frame gave it: its
    first and last entries above MIN_SHARE are the span's frames (a tail is rescaled by more
    than 1, which only lifts its entries)."""
    gen = torch.Generator().manual_seed(seed)
    frames = 40
    alpha = torch.sigmoid(torch.randn(1, frames, generator=gen) * 2)
    alpha[0, torch.randperm(frames, generator=gen)[:5]] = 0.0  # frames without weight
    out = continuous_integrate_and_fire(torch.eye(frames).unsqueeze(0), alpha, torch.zeros(1, frames, dtype=torch.bool),
                                        tail_threshold=0.4)
    spans = integration_frames(alpha[0].numpy(), tail_threshold=0.4)
    assert len(spans) == int(out.num_fires[0])
    for k, (first, last) in enumerate(spans):
        nonzero = torch.nonzero(out.fired[0, k] > MIN_SHARE).flatten().tolist()
        assert (first, last) == (nonzero[0], nonzero[-1])
    starts = [s for s, _ in spans]
    assert starts == sorted(starts)
    assert np.all(np.diff([e for _, e in spans]) >= 0)
