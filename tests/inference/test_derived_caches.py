"""Every derived-weight cache of the fast blocks (fused q/k/v, folded weight norm, channels-last
conv weights; ``inference/blocks/derived.py``) watches every parameter it is built from.

Each parameter of a fast-block student is changed in place, alone, after the caches were built;
the fast forward (no autograd, CPU: the cached copies) must then equal the plain forward of the
same model (under autograd the blocks run from the parameters themselves). A cache that stopped
watching a source (say ``weight_g`` of the positional convolution) keeps the old copy and the two
part. The load-a-state-dict case is in ``test_inference_layer.py``."""

from __future__ import annotations

import pytest
import torch

import recycle_distill.inference.blocks.positional as positional
from helpers.tiny_students import tiny_student
from recycle_distill.inference import optimize_for_inference

# Relative max difference fast vs plain (float32, other summation orders; 0.25 s inputs):
# 1.1e-6 measured; 1e-5 is the tiny students' fast-path bound in test_long_inputs.py. A stale
# copy after a 10% change of one parameter moves the output by more (the planted bug below).
SAME = 1e-5


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    waves = torch.randn(2, 4000, generator=generator) * 0.1
    waves[1, 3000:] = 0
    return waves, torch.tensor([4000, 3000])


def fast_forward(model) -> list[torch.Tensor]:
    """The hidden states from the cached, derived weights (rebuilt first where a watched source changed)."""
    with torch.no_grad():
        return model(*inputs()).hidden_states


def relative_difference(model) -> float:
    waves, lengths = inputs()
    fast = fast_forward(model)
    plain = model(waves, lengths).hidden_states  # autograd: the plain blocks, from the parameters
    return max(float((a - b.detach()).abs().max() / b.detach().abs().max())
               for a, b in zip(fast, plain, strict=True))


def holds_derived_copy(module: torch.nn.Module) -> bool:
    """``derived_tensor`` caches a ``(key, tensor)`` pair as a private plain attribute."""
    return any(name.startswith("_") and isinstance(value, tuple) and len(value) == 2
               and isinstance(value[1], torch.Tensor) for name, value in vars(module).items())


def cache_owners(model) -> tuple[str, ...]:
    """Names (with a trailing dot) of the modules holding a derived copy, built from their own
    parameters or their children's (the fused q/k/v from ``q_proj``, ``k_proj``, ``v_proj``)."""
    fast_forward(model)
    return tuple(f"{name}." for name, module in model.named_modules() if holds_derived_copy(module))


def stale_parameters(model, within: tuple[str, ...]) -> list[str]:
    """Names of the parameters under the modules ``within`` whose in-place change the fast
    forward does not follow."""
    stale = []
    for name, parameter in model.named_parameters():
        if not name.startswith(within):
            continue
        fast_forward(model)  # every cache built from the current parameters before the change
        with torch.no_grad():
            saved = parameter.clone()
            parameter.mul_(1.1).add_(0.01)  # in place: same storage, new version
        if relative_difference(model) > SAME:
            stale.append(name)
        with torch.no_grad():
            parameter.copy_(saved)
    return stale


@pytest.fixture(scope="module")
def model():
    model = optimize_for_inference(tiny_student("armhubert"))
    watched = {"_qkv_weight", "_folded_weight_nhwc", "_channels_last_weight"}
    relative_difference(model)
    built = {name for module in model.modules() for name in vars(module) if name in watched}
    assert built == watched  # the student really runs each cached path
    return model


def test_every_parameter_change_in_place_reaches_the_fast_forward(model):
    owners = cache_owners(model)  # the CNN's 7 convolutions, the positional conv, the attentions that map
    assert stale_parameters(model, owners) == []


def test_a_cache_that_stops_watching_weight_g_is_caught(model, monkeypatch):
    """Planted bug: the folded weight-norm copy is keyed on ``weight_v`` only."""
    derived = positional.derived_tensor
    monkeypatch.setattr(positional, "derived_tensor",
                        lambda module, name, sources, build: derived(module, name, sources[1:], build))
    within = next(name for name, module in model.named_modules()
                  if isinstance(module, positional.FoldedWeightNormConv1d))
    assert [name.removeprefix(within) for name in stale_parameters(model, (within,))] == [".weight_g"]
