"""Comparing a student built with the map-free reuse blocks against the stored-map one."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from recycle_distill import build_student

from conftest import load_fixture

# Dropout off: train-mode forwards of both models then draw no random numbers and must agree.
DROPOUT_FREE = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0)


def padded_batch(seconds: Sequence[float], seed: int = 0) -> tuple[Tensor, Tensor]:
    """(B, S) noise waveforms at 16 kHz right-padded with zeros, and their (B,) lengths."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * 16000) for s in seconds])
    waves = torch.randn(len(seconds), int(lengths.max()), generator=generator) * 0.1
    waves[torch.arange(waves.shape[1])[None, :] >= lengths[:, None]] = 0
    return waves, lengths


def tiny_arm_pair(**overrides) -> tuple[nn.Module, nn.Module]:
    """The tiny ARMHuBERT fixture (96-dim, 4 heads, layers full/reuse/full/reuse) built with the
    plain blocks and with ``blocks="map_free"``, dropout off, same weights, eval mode."""
    fixture = load_fixture("golden_tiny_armhubert.pt")
    models = []
    for blocks in ("plain", "map_free"):
        model = build_student(fixture["config"], family="armhubert", blocks=blocks, **DROPOUT_FREE, **overrides)
        model.load_state_dict(fixture["state_dict"])
        models.append(model.eval())
    return models[0], models[1]


def state_difference(states: Sequence[Tensor], reference: Sequence[Tensor]) -> float:
    """Largest |state - reference| over every hidden state, in units of max(1, max |reference|)."""
    worst = 0.0
    for a, b in zip(states, reference, strict=True):
        assert a.shape == b.shape
        scale = max(1.0, float(b.detach().abs().max()))
        worst = max(worst, float((a.detach().float() - b.detach().float()).abs().max()) / scale)
    return worst


def outputs_and_grads(model: nn.Module, waves: Tensor, lengths: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
    """The hidden states and every parameter's gradient of a loss that weighs each state's
    frames with fixed random weights (so every layer and frame contributes)."""
    model.zero_grad(set_to_none=True)
    states = model(waves, lengths).hidden_states
    generator = torch.Generator().manual_seed(1)
    loss = sum((state * torch.randn(state.shape, generator=generator)).sum() for state in states)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return [s.detach() for s in states], grads


def assert_outputs_and_grads_close(plain: nn.Module, ours: nn.Module, waves: Tensor, lengths: Tensor,
                                   tolerance: float) -> None:
    """States within ``tolerance`` of max(1, |state|); each gradient within ``tolerance`` of that
    parameter's largest gradient, floored at 1e-4 of the model's largest; the same parameters
    get gradients.

    The floor is for ``k_proj.bias``, whose gradient is zero in exact arithmetic (a key bias
    shifts each score row by a constant, which softmax ignores): both paths give float noise
    there (~1e-9 against gradients up to ~1e2 in the tiny model).
    """
    reference_states, reference_grads = outputs_and_grads(plain, waves, lengths)
    states, grads = outputs_and_grads(ours, waves, lengths)
    assert state_difference(states, reference_states) <= tolerance
    assert grads.keys() == reference_grads.keys()
    floor = 1e-4 * max(float(g.abs().max()) for g in reference_grads.values())
    for name, reference in reference_grads.items():
        scale = max(floor, float(reference.abs().max()))
        assert float((grads[name] - reference).abs().max()) <= tolerance * scale, name
