"""The inference layer's mechanics: explicit block swaps, unchanged weights, plain fallbacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recycle_distill import build_student
from recycle_distill.lab.analysis.precision_error import layer_errors, worst_layer
from recycle_distill.inference import FAST_BLOCKS, optimize_for_inference, plain_blocks, torch_int8_available
from recycle_distill.students.blocks.masks import pad_waveforms

from conftest import modules_loaded_by, shrink_fast_paths
from helpers.tiny_students import TINY_FAMILIES as FAMILIES
from helpers.tiny_students import tiny_student as tiny

def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return pad_waveforms([torch.randn(n, generator=generator) * 0.1 for n in (16000, 11200, 13600)])


def test_every_fast_block_is_a_plain_block_with_nothing_added():
    for plain, fast in FAST_BLOCKS.items():
        assert issubclass(fast, plain), fast
        assert fast.__init__ is plain.__init__, f"{fast.__name__} must not build anything of its own"


@pytest.mark.parametrize("family", FAMILIES)
def test_swap_keeps_the_state_dict_and_leaves_the_callers_model_alone(family):
    model = tiny(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert {type(m) for m in model.modules()}.isdisjoint(FAST_BLOCKS.values())  # the copy was swapped
    swapped = [m for m in fast.modules() if type(m) in FAST_BLOCKS.values()]
    assert swapped, "nothing was swapped"
    state = fast.state_dict()
    assert list(state) == list(before)
    assert all(torch.equal(state[k], before[k]) for k in before)
    fast(*batch())  # derived tensors (fused q/k/v, folded weight norm) are caches, not state
    assert list(fast.state_dict()) == list(before)
    plain_blocks(fast)
    assert not [m for m in fast.modules() if type(m) in FAST_BLOCKS.values()]
    bf16 = optimize_for_inference(model, "bf16")
    assert list(bf16.state_dict()) == list(before)
    assert {v.dtype for v in bf16.state_dict().values() if v.is_floating_point()} == {torch.bfloat16}


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_blocks_fall_back_to_the_plain_ones_under_autograd(family, monkeypatch):
    """A swapped model still trains: same outputs and gradients as the plain model."""
    shrink_fast_paths(monkeypatch)
    plain = tiny(family)
    fast = optimize_for_inference(plain)
    waves, lengths = batch()
    losses = []
    for model in (plain, fast):
        model.zero_grad()
        loss = sum(h.square().mean() for h in model(waves, lengths).hidden_states)
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    compared = 0
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name  # mask_emb and frozen parts get none
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), name
            compared += 1
    assert compared > 10


def test_derived_weights_follow_a_later_load_state_dict():
    """Fused q/k/v and folded weight-norm copies are rebuilt when the parameters change."""
    model = tiny("maskhubert")
    fast = optimize_for_inference(model)
    waves, lengths = batch()
    with torch.no_grad():
        fast(waves, lengths)  # builds the derived copies from the fixture weights
        torch.manual_seed(1)
        other = build_student(model.config, family="maskhubert").eval()
        fast.load_state_dict(other.state_dict())
        got, want = fast(waves, lengths).hidden_states, other(waves, lengths).hidden_states
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() <= 1e-5


def test_plain_attention_does_not_stop_torch_dynamic_quantization():
    """The reference-era attention concatenated q/k/v weights at call time, which crashed on
    quantized Linears; the plain blocks call each projection as a module."""
    available, why = torch_int8_available()
    if not available:
        pytest.skip(why)
    import warnings

    model = tiny("armhubert")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    waves, lengths = batch()
    with torch.no_grad():
        got, want = quantized(waves, lengths).hidden_states, model(waves, lengths).hidden_states
    assert worst_layer(layer_errors(want, got)).relative_l2 < 0.1


def test_the_teacher_imports_the_cnn_runner_without_any_student_module():
    """Only the shared length/mask helpers (modules.masks) are common to both."""
    loaded = modules_loaded_by("recycle_distill.training.teacher.teacher", (
        "recycle_distill.students.blocks.", "recycle_distill.students", "recycle_distill.inference."))
    shared = ("recycle_distill.students", "recycle_distill.students.blocks", "recycle_distill.students.blocks.masks")
    assert [m for m in loaded if m not in shared] == ["recycle_distill.inference.blocks",
                                                      "recycle_distill.inference.blocks.conv_chunks",
                                                      "recycle_distill.inference.blocks.conv_runner",
                                                      "recycle_distill.inference.blocks.derived"]


def test_an_unknown_precision_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"^dtype: unsupported precision 'fp8'; choose one of fp32, bf16, int8$"):
        optimize_for_inference(tiny("maskhubert"), "fp8")


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_fast_blocks_take_every_branch_within_the_bf16_bound(family, monkeypatch):
    """bf16 on the fast path replaces the fused attention kernel by blocked explicit attention
    and keeps the maps in bf16; with the thresholds shrunk every block/row branch runs, and
    each layer stays within bf16's error bound (docs/inference.md §3) of the fp32 plain model."""
    shrink_fast_paths(monkeypatch)
    model = tiny(family)
    waves, lengths = batch()
    with torch.no_grad():
        want = model(waves, lengths)
        got = optimize_for_inference(model, "bf16")(waves, lengths)
        plain_bf16 = optimize_for_inference(model, "bf16", fast_paths=False)(waves, lengths)
    assert {h.dtype for h in got.hidden_states} == {torch.float32}
    fast = layer_errors(want.hidden_states, got.hidden_states, want.padding_mask)
    plain = layer_errors(want.hidden_states, plain_bf16.hidden_states, want.padding_mask)
    for fast_error, plain_error in zip(fast, plain, strict=True):
        assert 1e-3 < fast_error.relative_l2 <= 2e-2, fast_error
        assert fast_error.relative_l2 <= 1.5 * plain_error.relative_l2, (fast_error, plain_error)  # no worse than plain bf16
