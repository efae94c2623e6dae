"""The torch CIF (``cif_asr/cif.py``) beyond ``test_cif.py``: the closed form at a float32 tie,
which rows it hands to the float32 loop (a spy sees the choice, since both decide alike away from
ties), and the weight predictor's arguments.

Written for the survivors of mutation testing (docs/development.md, Mutation testing); every
expected value is worked out by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recycle_distill.downstreams.cif_asr import cif
from recycle_distill.downstreams.cif_asr.cif import CifWeightPredictor, continuous_integrate_and_fire

F32 = np.float32
ULP = 2.0 ** -24  # the float32 spacing in [0.5, 1)


@pytest.fixture
def loop_rows(monkeypatch):
    """The length of each utterance the CIF hands to the float32 loop (the loop still runs)."""
    rows = []
    real = cif.sequential_firings

    def spy(alpha, *args):
        rows.append(len(alpha))
        return real(alpha, *args)

    monkeypatch.setattr(cif, "sequential_firings", spy)
    return rows


def _fire(alpha: list[list[float]], **kwargs):
    weights = torch.tensor(alpha, dtype=torch.float32)
    hidden = torch.ones(*weights.shape, 2)
    return continuous_integrate_and_fire(hidden, weights, torch.zeros_like(weights, dtype=torch.bool), **kwargs)


def test_closed_form_fires_on_a_float32_tie():
    # 1e-10 below float32(0.99) is no firing in real arithmetic; its float32 rounding is a firing.
    below = float(F32(0.99)) - 1e-10
    assert F32(below) == F32(0.99)
    counts = cif._firing_counts(torch.tensor([[below, below + 0.5]], dtype=torch.float64), float(F32(0.99)))
    assert counts.tolist() == [[1, 1]]


def test_far_from_every_threshold_no_row_goes_to_the_loop(loop_rows):
    # Sums 0.5, 1.1 (fires), 1.3 and 0.3, 0.6, 0.9: no value near 0.99.
    out = _fire([[0.5, 0.6, 0.2], [0.3, 0.3, 0.3]])
    assert out.num_fires.tolist() == [1, 0] and loop_rows == []


def test_each_row_is_bounded_by_its_own_largest_weight(loop_rows):
    # Row 1 lies 1e-5 (about 168 * 2**-24) above the threshold: outside its own bound
    # (2**-24 * (4 + 1) at its first frame) though inside the bound row 0's weight 1000 gives.
    out = _fire([[1000.0, 0.0], [float(F32(0.99)) + 1e-5, 0.0]])
    assert out.num_fires.tolist() == [2, 1] and loop_rows == []


def test_a_weight_above_1_widens_its_rows_bound(loop_rows):
    # Frame 0 (1.5) fires; frame 1 leaves 0.99 + 11 * 2**-24: inside the bound of a row whose
    # largest weight is 1.5 (2**-24 * (1 / 2 + 4 * 1.5 * 2 + 1) = 13.5 ulp), outside 1's (9.5 ulp).
    second = float(F32(0.99)) - 0.5 + 11 * ULP
    assert float(F32(second)) == second
    out = _fire([[1.5, second]])
    assert loop_rows == [2] and out.num_fires.tolist() == [2]


def test_weight_predictor_rejects_an_even_kernel():
    with pytest.raises(ValueError, match="^kernel_size must be odd, got 4$"):
        CifWeightPredictor(8, kernel_size=4)


def test_weight_predictor_channels():
    assert CifWeightPredictor(8).conv.out_channels == 8
    assert CifWeightPredictor(8, channels=6).conv.out_channels == 6


def test_weight_predictor_keeps_the_length_with_a_wider_kernel():
    alpha = CifWeightPredictor(4, kernel_size=5).eval()(torch.randn(2, 7, 4), torch.zeros(2, 7, dtype=torch.bool))
    assert alpha.shape == (2, 7)


def test_a_padded_tie_hands_the_loop_only_the_processed_frames(loop_rows):
    # One valid frame (a tie at 0.99): the loop runs over it and the first padded frame, never
    # over the padded frame after (whose weight 0.5 would otherwise fire).
    weights = torch.tensor([[0.99, 0.0, 0.5]])
    out = continuous_integrate_and_fire(torch.ones(1, 3, 2), weights, torch.tensor([[False, True, True]]))
    assert loop_rows == [2] and out.num_fires.tolist() == [1]


def test_a_mismatched_padding_mask_alone_is_refused():
    with pytest.raises(ValueError, match=r"got \(2, 3, 4\), \(2, 3\), \(2, 4\)$"):
        continuous_integrate_and_fire(torch.zeros(2, 3, 4), torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool))


def test_an_integer_padding_mask_means_what_a_bool_one_does():
    # Row 0: 1.3 fires, leftover 0.3 > 0.25 is a tail; row 1: 1.2 fires, leftover 0.2 is none.
    weights = torch.tensor([[0.6, 0.7, 0.0], [0.5, 0.3, 0.4]])
    mask = torch.tensor([[0, 0, 1], [0, 0, 0]])
    hidden = torch.randn(2, 3, 4)
    as_int = continuous_integrate_and_fire(hidden, weights, mask, tail_threshold=0.25)
    as_bool = continuous_integrate_and_fire(hidden, weights, mask.bool(), tail_threshold=0.25)
    assert as_int.num_fires.tolist() == as_bool.num_fires.tolist() == [2, 1]
    torch.testing.assert_close(as_int.fired, as_bool.fired)


def test_scaling_adds_its_epsilon_to_a_tiny_weight_sum():
    # ratio = 1 / (2e-6 + 1e-8): frame 0 gets 0.497512, frame 1 completes the firing with the rest.
    hidden = torch.eye(2).unsqueeze(0)  # frame t's vector is e_t
    out = continuous_integrate_and_fire(hidden, torch.tensor([[1e-6, 1e-6]]), torch.zeros(1, 2, dtype=torch.bool),
                                        target_lengths=torch.tensor([1]))
    first = 1e-6 / (2e-6 + 1e-8)
    torch.testing.assert_close(out.fired[0, 0], torch.tensor([first, 1 - first]), atol=1e-5, rtol=0)


def test_a_long_utterance_integrates_exactly_one_unit_per_firing():
    # 20000 frames of float32(0.3) (0.3 + 1.2e-8): 6000 firings, each row integrating exactly one
    # unit of weight. Running sums reach 6000, where float32 sums (ulp 4.9e-4) would leave
    # errors of about 1e-4 in each row's split of a frame; float64 sums keep them exact.
    out = continuous_integrate_and_fire(torch.ones(1, 20000, 1), torch.full((1, 20000), 0.3),
                                        torch.zeros(1, 20000, dtype=torch.bool))
    assert out.num_fires.tolist() == [6000]
    torch.testing.assert_close(out.fired[0, :, 0], torch.ones(6000), atol=1e-5, rtol=0)


def test_weights_past_the_first_padded_frame_are_ignored_in_the_last_row():
    # Frames 2 and 3 are not processed; their weights would fire twice, past the rows the batch has.
    hidden = torch.ones(1, 4, 2)
    mask = torch.tensor([[False, True, True, True]])
    out = continuous_integrate_and_fire(hidden, torch.tensor([[0.5, 0.0, 2.0, 2.0]]), mask)
    clean = continuous_integrate_and_fire(hidden, torch.tensor([[0.5, 0.0, 0.0, 0.0]]), mask)
    assert out.num_fires.tolist() == clean.num_fires.tolist() == [0]
    assert torch.equal(out.fired, clean.fired)


def test_a_tiny_tail_is_rescaled_with_its_epsilon():
    # Leftover 2e-10 above a tail threshold of 0: the tail row is 2e-10 / (2e-10 + 1e-10) = 2/3.
    weight = float(np.float32(2e-10))
    out = continuous_integrate_and_fire(torch.ones(1, 1, 1), torch.tensor([[weight]]),
                                        torch.zeros(1, 1, dtype=torch.bool), tail_threshold=0.0)
    assert out.num_fires.tolist() == [1]
    torch.testing.assert_close(out.fired[0, 0, 0].item(), weight / (weight + 1e-10), atol=1e-6, rtol=0)
