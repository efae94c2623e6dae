"""CIF decisions at float32 boundaries (``docs/cif.md`` section 1): exact float32 ties at the tail
threshold and at the firing threshold decide as the original's float32 loop does, in both tail
modes; on weights from decimal grids (ties and near ties everywhere) every decision equals the
loop's; the NumPy rule (``firing_rule``, used for token times and by the ONNX runner) and the
torch CIF agree.

Every expected value is computed by hand in float32 here: each case first asserts the float32
fact it rests on (NumPy float32 additions are IEEE round-to-nearest, as the original's are) and
that float64 arithmetic would decide the other way, so each case fails on a float64 decision.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import torch

from recycle_distill.downstreams.cif_asr.cif import continuous_integrate_and_fire
from recycle_distill.downstreams.cif_asr.firing_rule import firing_decisions

ROOT = pathlib.Path(__file__).resolve().parents[2]
F32 = np.float32


def _frame_loop():
    """The frame-by-frame float32 transcription of the original (benchmarks/cif_frame_loop.py)."""
    spec = importlib.util.spec_from_file_location("cif_frame_loop", ROOT / "benchmarks" / "cif_frame_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cif_frame_loop


def _cif(weights: list[list[float]], valid: list[int], tail: float | None, legacy: bool):
    """Our CIF on one-hot frames (frame t's vector is e_t), rows padded with weight 0."""
    frames = len(weights[0])
    alpha = torch.tensor(weights, dtype=torch.float32)
    pad = torch.arange(frames).unsqueeze(0) >= torch.tensor(valid).unsqueeze(1)
    hidden = torch.eye(frames).unsqueeze(0).repeat(len(weights), 1, 1)
    out = continuous_integrate_and_fire(hidden, alpha, pad, tail_threshold=tail, legacy_tail=legacy)
    return out, hidden, alpha, pad


# --- the tail threshold ------------------------------------------------------------------

def test_tail_tie_facts_by_hand():
    # float32(0.2) + 0.25 rounds to exactly float32(0.45): the original's leftover is not above 0.45 ...
    assert F32(F32(0.2) + F32(0.25)) == F32(0.45)
    # ... while the exact (float64) sum is above float32(0.45).
    assert float(F32(0.2)) + 0.25 > float(F32(0.45))
    # One float32 step more (0.25 -> its successor) is above it in float32 too.
    assert F32(F32(0.2) + np.nextafter(F32(0.25), F32(1))) > F32(0.45)


def test_tail_tie_is_not_emitted_default_mode():
    out, *_ = _cif([[0.2, 0.25]], [2], tail=0.45, legacy=False)
    assert out.num_fires.tolist() == [0]
    assert out.fired_lengths.tolist() == [1] and bool((out.fired == 0).all())


def test_tail_just_above_the_tie_is_emitted_default_mode():
    above = float(np.nextafter(F32(0.25), F32(1)))
    out, *_ = _cif([[0.2, above]], [2], tail=0.45, legacy=False)
    assert out.num_fires.tolist() == [1]
    total = float(F32(0.2)) + above
    torch.testing.assert_close(out.fired[0, 0, :2], torch.tensor([float(F32(0.2)) / total, above / total]),
                               atol=1e-6, rtol=0)


def test_tail_tie_is_not_emitted_legacy_mode():
    # Legacy: only an utterance with a padded frame (here row 0, not the batch's longest) has a tail step.
    out, *_ = _cif([[0.2, 0.25, 0.0], [0.3, 0.3, 0.3]], [2, 3], tail=0.45, legacy=True)
    assert out.num_fires.tolist() == [0, 0]
    above = float(np.nextafter(F32(0.25), F32(1)))
    out, *_ = _cif([[0.2, above, 0.0], [0.3, 0.3, 0.3]], [2, 3], tail=0.45, legacy=True)
    assert out.num_fires.tolist() == [1, 0]


@pytest.mark.parametrize("legacy", [True, False])
def test_tail_tie_matches_the_float32_frame_loop(legacy):
    weights = [[0.2, 0.25, 0.0], [0.2, float(np.nextafter(F32(0.25), F32(1))), 0.0]]
    out, hidden, alpha, pad = _cif(weights, [2, 2], tail=0.45, legacy=legacy)
    _, loop_fires = _frame_loop()(hidden, alpha, pad, tail_threshold=0.45)
    assert out.num_fires.tolist() == loop_fires.tolist() == [0, 1]


# --- the firing threshold ----------------------------------------------------------------

TIE = (0.04, 0.95)  # float32(0.04) + float32(0.95) rounds to exactly float32(0.99)


def test_firing_tie_facts_by_hand():
    a, b = F32(TIE[0]), F32(TIE[1])
    assert F32(a + b) == F32(0.99)  # the original fires (a tie fires)
    assert float(a) + float(b) < float(F32(0.99))  # the exact sum is below the threshold
    below = np.nextafter(b, F32(0))
    assert F32(a + below) < F32(0.99)  # one float32 step less does not fire


@pytest.mark.parametrize("tail, legacy", [(None, True), (0.4, True), (0.4, False)])
def test_firing_tie_fires_in_every_mode(tail, legacy):
    a, b = TIE
    below = float(np.nextafter(F32(b), F32(0)))
    out, *_ = _cif([[a, b, 0.0], [a, below, 0.0]], [2, 2], tail=tail, legacy=legacy)
    # Row 0 fires at frame 1 and leaves float32(a + b) - 1 < 0: no tail. Row 1 never fires; its
    # leftover 0.99 - ulp is above 0.4, so it is emitted as a tail where there is a tail step.
    expected_tail = 0 if tail is None else 1
    assert out.num_fires.tolist() == [1, expected_tail]
    torch.testing.assert_close(out.fired[0, 0, :2], torch.tensor([float(F32(a)), 1.0 - float(F32(a))]),
                               atol=1e-7, rtol=0)


def test_firing_tie_after_a_firing():
    # Frame 0 fires with exactly 1.0 (leftover 0); frames 1-2 then tie at the threshold and fire.
    a, b = TIE
    out, hidden, alpha, pad = _cif([[1.0, a, b]], [3], tail=None, legacy=True)
    _, loop_fires = _frame_loop()(hidden, alpha, pad)
    assert out.num_fires.tolist() == loop_fires.tolist() == [2]


# --- every decision equals the loop's; the NumPy rule equals the torch CIF ---------------

def _grid_batch(seed: int, step: float, batch: int = 8, frames: int = 30):
    """Weights that are multiples of ``step`` (as float32): sums of such decimals tie and
    near-tie the thresholds in float32 all the time, and the loop's rounding errors pile up."""
    gen = torch.Generator().manual_seed(seed)
    alpha = (torch.randint(0, int(round(1 / step)) + 1, (batch, frames), generator=gen).double() * step).float()
    lengths = torch.randint(1, frames + 1, (batch,), generator=gen)
    pad = torch.arange(frames).unsqueeze(0) >= lengths.unsqueeze(1)
    return alpha.masked_fill(pad, 0.0), pad


@pytest.mark.parametrize("step", [0.05, 0.01, 0.03])
def test_every_decision_equals_the_float32_loop_on_decimal_grids(step):
    loop = _frame_loop()
    for seed in range(25):
        alpha, pad = _grid_batch(seed, step)
        hidden = torch.randn(*alpha.shape, 3, generator=torch.Generator().manual_seed(seed))
        for tail in (None, 0.4, 0.45, 0.5):
            fired, expected = loop(hidden, alpha, pad, tail_threshold=tail)
            out = continuous_integrate_and_fire(hidden, alpha, pad, tail_threshold=tail, legacy_tail=True)
            assert torch.equal(out.num_fires, expected), (seed, tail)
            torch.testing.assert_close(out.fired, fired, atol=1e-5, rtol=0)
            if tail is not None:  # default mode: the loop on the batch extended by one padded frame
                extended = torch.nn.functional.pad
                _, expected = loop(extended(hidden, (0, 0, 0, 1)), extended(alpha, (0, 1)),
                                   extended(pad, (0, 1), value=True), tail_threshold=tail)
                out = continuous_integrate_and_fire(hidden, alpha, pad, tail_threshold=tail)
                assert torch.equal(out.num_fires, expected), (seed, tail)


@pytest.mark.parametrize("seed", range(10))
def test_numpy_rule_equals_the_torch_cif(seed):
    rng = np.random.default_rng(seed)
    grid = (rng.integers(0, 21, size=120) * 0.05).astype(np.float32)
    sigmoid = (1 / (1 + np.exp(-rng.normal(size=120) * 2))).astype(np.float32)
    for alpha in (grid, sigmoid, np.array([TIE[0], TIE[1], 0.2, 0.25], dtype=np.float32)):
        for tail in (None, 0.45):
            # The default tail mode processes one more frame of weight 0: give the rule that frame too.
            steps = alpha if tail is None else np.append(alpha, F32(0.0))
            counts, emitted = firing_decisions(steps, tail_threshold=tail)
            out = continuous_integrate_and_fire(torch.zeros(1, len(alpha), 1), torch.from_numpy(alpha)[None],
                                                torch.zeros(1, len(alpha), dtype=torch.bool), tail_threshold=tail)
            assert int(out.num_fires[0]) == int(counts[-1]) + int(emitted)
        _, loop_fires = _frame_loop()(torch.zeros(1, len(alpha), 1), torch.from_numpy(alpha)[None],
                                      torch.zeros(1, len(alpha), dtype=torch.bool))
        assert int(firing_decisions(alpha)[0][-1]) == int(loop_fires[0])


def test_numpy_tail_rule_by_hand():
    assert firing_decisions(np.array([0.2, 0.25], dtype=np.float32), tail_threshold=0.45)[1] is False
    above = np.array([0.2, np.nextafter(F32(0.25), F32(1))], dtype=np.float32)
    assert firing_decisions(above, tail_threshold=0.45)[1] is True
