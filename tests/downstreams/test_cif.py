"""Continuous integrate-and-fire: the original's recorded outputs, hand-computed cases, gradients.

Rules: ``docs/cif.md``. Fixtures: ``tests/data/cif/cif_*.pt``, recorded by running the original
CIF-HieraDist code (the call mapping of each mode is in ``docs/cif.md``, section "Fixtures").
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest
import torch

from recycle_distill.downstreams.cif_asr.cif import CifWeightPredictor, continuous_integrate_and_fire

CIF_DATA = pathlib.Path(__file__).parents[1] / "data" / "cif"
ROOT = pathlib.Path(__file__).resolve().parents[2]
CIF_FIXTURES = sorted(CIF_DATA.glob("cif_*.pt"))


def _frame_loop():
    spec = importlib.util.spec_from_file_location("cif_frame_loop", ROOT / "benchmarks" / "cif_frame_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cif_frame_loop


def _runs():
    for path in CIF_FIXTURES:
        data = torch.load(path, weights_only=True)
        for run in data["runs"]:
            yield pytest.param(data["batches"][run["batch"]], run, id=f"{path.stem}:{run['name']}")


def _call(batch: dict, run: dict):
    call = run["call"]
    return continuous_integrate_and_fire(
        batch["hidden"], batch["alpha"], batch["padding_mask"],
        target_lengths=batch["target_lengths"] if call["target_lengths"] else None,
        threshold=call["threshold"], tail_threshold=call["tail_threshold"], legacy_tail=call["legacy_tail"])


def test_fixture_set_is_complete():
    assert len(CIF_FIXTURES) == 4
    modes = {run["mode"] for path in CIF_FIXTURES for run in torch.load(path, weights_only=True)["runs"]}
    assert modes == {"train", "plain", "eval", "eval_padtail"}


@pytest.mark.parametrize("batch, run", list(_runs()))
def test_reproduces_the_original(batch, run):
    out = _call(batch, run)
    assert torch.equal(out.fired_lengths, run["fired_lengths"])
    assert torch.equal(out.num_fires, run["num_fires"])
    ref_width = run["fired"].shape[1]
    width = out.fired.shape[1]
    assert width >= ref_width
    assert torch.equal(out.fired_padding_mask[:, :ref_width], run["fired_padding_mask"])
    assert bool(out.fired_padding_mask[:, ref_width:].all())
    valid = ~run["fired_padding_mask"]
    torch.testing.assert_close(out.fired[:, :ref_width][valid], run["fired"][valid], atol=1e-5, rtol=0)
    assert bool((out.fired[out.fired_padding_mask] == 0).all())
    ref_sum = run["alpha_sum"]
    assert bool(((out.alpha_sum - ref_sum).abs() <= 1e-5 + 1e-6 * ref_sum.abs()).all())


def _one_hot_hidden(frames: int, batch: int = 1) -> torch.Tensor:
    """Frame t's vector is e_t, so an output vector shows the weight it took from each frame."""
    return torch.eye(frames).unsqueeze(0).repeat(batch, 1, 1)


def test_six_tenths_by_hand():
    alpha = torch.tensor([[0.6, 0.6, 0.6, 0.6, 0.5]])
    pad = torch.zeros(1, 5, dtype=torch.bool)
    out = continuous_integrate_and_fire(_one_hot_hidden(5), alpha, pad)
    # Frame 1 fires with 0.6 + 0.4 (leftover 0.2); frame 3 with 0.2 + 0.6 + 0.2 (leftover 0.4).
    expected = torch.tensor([[0.6, 0.4, 0.0, 0.0, 0.0], [0.0, 0.2, 0.6, 0.2, 0.0]])
    assert out.num_fires.tolist() == [2]
    torch.testing.assert_close(out.fired[0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.alpha_sum, torch.tensor([2.9]))


def test_six_tenths_padded_emits_its_tail():
    alpha = torch.tensor([[0.6, 0.6, 0.6, 0.6, 0.5, 0.0]])
    pad = torch.tensor([[False] * 5 + [True]])
    out = continuous_integrate_and_fire(_one_hot_hidden(6), alpha, pad, tail_threshold=0.5, legacy_tail=True)
    # Leftover 0.4 (frame 3) + 0.5 (frame 4) = 0.9 > 0.5: emitted, rescaled to unit weight.
    assert out.num_fires.tolist() == [3]
    torch.testing.assert_close(out.fired[0, 2], torch.tensor([0, 0, 0, 0.4 / 0.9, 0.5 / 0.9, 0]), atol=1e-6, rtol=0)
    # Without padding the legacy rule loses that tail; our default keeps it.
    alpha, pad = alpha[:, :5], pad[:, :5]
    legacy = continuous_integrate_and_fire(_one_hot_hidden(5), alpha, pad, tail_threshold=0.5, legacy_tail=True)
    default = continuous_integrate_and_fire(_one_hot_hidden(5), alpha, pad, tail_threshold=0.5)
    assert legacy.num_fires.tolist() == [2] and default.num_fires.tolist() == [3]


def test_tail_comparisons_are_float32():
    # 0.2 + 0.2 is float32(0.4) exactly: not above a 0.4 threshold (a float64 compare would emit it).
    alpha = torch.tensor([[0.2, 0.2, 0.0]])
    pad = torch.tensor([[False, False, True]])
    out = continuous_integrate_and_fire(torch.ones(1, 3, 2), alpha, pad, tail_threshold=0.4)
    assert out.num_fires.tolist() == [0]
    # 0.495 + 0.495 equals float32(0.99): it fires.
    out = continuous_integrate_and_fire(torch.ones(1, 2, 2), torch.tensor([[0.495, 0.495]]), torch.zeros(1, 2, dtype=torch.bool))
    assert out.num_fires.tolist() == [1]


@pytest.mark.parametrize("seed", range(20))
def test_scaling_fires_exactly_target_length(seed):
    gen = torch.Generator().manual_seed(seed)
    batch, frames = 6, 80
    lengths = torch.randint(10, frames + 1, (batch,), generator=gen)
    pad = torch.arange(frames).unsqueeze(0) >= lengths.unsqueeze(1)
    alpha = torch.rand(batch, frames, generator=gen).masked_fill(pad, 0.0)
    # At most one firing per frame: a target needs frames to spare (here at least 2 per unit).
    targets = (torch.rand(batch, generator=gen) * (lengths // 2 - 1)).long() + 1
    out = continuous_integrate_and_fire(torch.randn(batch, frames, 4, generator=gen), alpha, pad, target_lengths=targets)
    assert torch.equal(out.num_fires, targets)
    assert torch.equal(out.fired_lengths, targets)


def test_nothing_fired_gives_one_zero_valid_row():
    alpha = torch.tensor([[0.1, 0.1, 0.1], [0.9, 0.9, 0.0]])
    pad = torch.tensor([[False, False, False], [False, False, True]])
    out = continuous_integrate_and_fire(torch.randn(2, 3, 4), alpha, pad)
    assert out.num_fires.tolist() == [0, 1]
    assert out.fired_lengths.tolist() == [1, 1]
    assert out.fired_padding_mask.tolist() == [[False], [False]]
    assert bool((out.fired[0] == 0).all())
    empty = continuous_integrate_and_fire(torch.randn(2, 3, 4), torch.zeros(2, 3), pad, target_lengths=torch.tensor([2, 2]))
    assert empty.fired.shape == (2, 1, 4) and empty.num_fires.tolist() == [0, 0]


def _well_separated_alpha(gen: torch.Generator, batch: int, frames: int) -> torch.Tensor:
    """Weights whose running sums stay >= 1e-3 away from every firing decision (for finite differences)."""
    while True:
        alpha = torch.rand(batch, frames, generator=gen, dtype=torch.float64) * 0.8 + 0.1
        sums = torch.cumsum(alpha, 1)
        if ((sums - 0.99).remainder(1.0) - 0.5).abs().min() < 0.5 - 1e-3:
            return alpha


@pytest.mark.parametrize("tail", [None, 0.5])
def test_gradcheck(tail):
    gen = torch.Generator().manual_seed(0)
    alpha = _well_separated_alpha(gen, 2, 9)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 7:] = True
    alpha = alpha.masked_fill(pad, 0.0).requires_grad_()
    hidden = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def fired(h, a):
        return continuous_integrate_and_fire(h, a, pad, tail_threshold=tail).fired

    assert torch.autograd.gradcheck(fired, (hidden, alpha))


def test_gradcheck_scaled():
    gen = torch.Generator().manual_seed(1)
    alpha = _well_separated_alpha(gen, 1, 8).requires_grad_()
    hidden = torch.randn(1, 8, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    pad = torch.zeros(1, 8, dtype=torch.bool)
    targets = torch.tensor([3])

    def fired(h, a):
        return continuous_integrate_and_fire(h, a, pad, target_lengths=targets).fired

    assert torch.autograd.gradcheck(fired, (hidden, alpha))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_matches_frame_loop_values_and_gradients(mode):
    cif_frame_loop = _frame_loop()
    gen = torch.Generator().manual_seed(3)
    batch, frames, channels = 5, 60, 16
    lengths = torch.tensor([60, 41, 60, 17, 33])
    pad = torch.arange(frames).unsqueeze(0) >= lengths.unsqueeze(1)
    alpha = torch.rand(batch, frames, generator=gen).masked_fill(pad, 0.0)
    hidden = torch.randn(batch, frames, channels, generator=gen)
    targets = torch.tensor([20, 9, 15, 4, 8]) if mode == "train" else None
    tail = 0.4 if mode == "eval" else None
    grads = []
    for fn in (lambda h, a: continuous_integrate_and_fire(h, a, pad, targets, tail_threshold=tail, legacy_tail=True).fired,
               lambda h, a: cif_frame_loop(h, a, pad, targets, tail_threshold=tail)[0]):
        h, a = hidden.clone().requires_grad_(), alpha.clone().requires_grad_()
        out = fn(h, a)
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out * weights).sum().backward()
        grads.append((out.detach(), h.grad, a.grad))
    (ours, h_ours, a_ours), (loop, h_loop, a_loop) = grads
    torch.testing.assert_close(ours, loop, atol=2e-5, rtol=0)
    torch.testing.assert_close(h_ours, h_loop, atol=2e-5, rtol=0)
    torch.testing.assert_close(a_ours, a_loop, atol=1e-4, rtol=1e-4)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"expected hidden \(B, T, C\)"):
        continuous_integrate_and_fire(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))


def _predictor_batches():
    for path in CIF_FIXTURES:
        for batch in torch.load(path, weights_only=True)["batches"]:
            if batch.get("predictor_state"):
                yield pytest.param(batch, id=f"{path.stem}:{batch['name']}")


@pytest.mark.parametrize("batch", list(_predictor_batches()))
def test_weight_predictor_matches_the_original(batch):
    state = batch["predictor_state"]
    channels, in_dim, _ = state["conv.weight"].shape
    predictor = CifWeightPredictor(in_dim, channels, isolate_padding=False).eval()
    predictor.load_state_dict(state)
    with torch.no_grad():
        alpha = predictor(batch["hidden"], batch["padding_mask"])
    torch.testing.assert_close(alpha, batch["alpha"], atol=1e-6, rtol=0)
    assert bool((alpha[batch["padding_mask"]] == 0).all())


def test_weight_predictor_isolates_padding():
    predictor = CifWeightPredictor(8, 8).eval()
    hidden = torch.randn(2, 10, 8)
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[1, 6:] = True
    noisy = hidden.clone()
    noisy[1, 6:] = 100 * torch.randn(4, 8)
    with torch.no_grad():
        clean_alpha, noisy_alpha = predictor(hidden, pad), predictor(noisy, pad)
        alone = predictor(hidden[1:, :6], pad[1:, :6])
    torch.testing.assert_close(clean_alpha, noisy_alpha)
    torch.testing.assert_close(clean_alpha[1, :6], alone[0])
