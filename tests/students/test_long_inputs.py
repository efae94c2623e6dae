"""The inference blocks (blocked attention, per-utterance runs) equal the plain blocks.

After ``optimize_for_inference`` the students walk attention maps in blocks on CPU without
autograd (row blocks past ~14.5 s) and may run the CNN and layers one utterance at a time;
the plain model runs batched. Both must give the same numbers: on the ~1 s fixtures with
the thresholds shrunk (fast), and on real 16 s and 40 s inputs (slow).
"""

from __future__ import annotations

import pytest
import torch

from recycle_distill import build_student
from recycle_distill.inference import optimize_for_inference

from conftest import shrink_fast_paths
from helpers.tiny_students import tiny_student

FAMILIES = ["armhubert", "maskhubert", "starhubert", "fithubert"]
PRESETS = ["armhubert", "maskhubert", "starhubert", "fithubert"]


def padded_batch(seconds: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * 16000) for s in seconds])
    waves = torch.randn(len(seconds), int(lengths.max()), generator=generator) * 0.1
    waves[torch.arange(waves.shape[1])[None, :] >= lengths[:, None]] = 0
    return waves, lengths


def max_difference(model, waves, lengths) -> float:
    """Largest |inference blocks - plain blocks| over every hidden state's valid frames, in units of max(1, max |state|).

    Float32 sums taken in another order (batched vs per-utterance convolutions, blocked
    softmax) differ by a few 1e-6 of the values' size; a wrong block or row is off by O(1).
    """
    with torch.no_grad():
        fast = optimize_for_inference(model)(waves, lengths)
    plain = model(waves, lengths)  # with autograd: the plain path in every block
    worst = 0.0
    valid = ~plain.padding_mask if plain.padding_mask is not None else None
    for a, b in zip(fast.hidden_states, plain.hidden_states, strict=True):
        assert a.shape == b.shape
        difference = (a - b.detach()).abs()
        if valid is not None and valid.shape == difference.shape[:2]:
            difference = difference[valid]
        worst = max(worst, float(difference.max()) / max(1.0, float(b.detach().abs().max())))
    return worst


@pytest.mark.parametrize("family", FAMILIES)
def test_shrunk_fast_paths_equal_autograd_on_the_fixtures(family, monkeypatch):
    shrink_fast_paths(monkeypatch)
    model = tiny_student(family)
    waves, lengths = padded_batch([1.0, 0.7, 0.85])
    assert max_difference(model, waves, lengths) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("seconds, tolerance", [
    ([16.0, 12.7], 1e-5),
    ([40.0], 1e-5),
    # A 40 s pair also takes the per-utterance CNN and layers; float32 GroupNorm statistics over
    # 640k samples summed batched vs one by one: measured 1.4e-5 .. 2.0e-5 of the values' size.
    ([40.0, 36.7], 3e-5),
], ids=["16s-pair", "40s", "40s-pair"])
@pytest.mark.parametrize("family", FAMILIES)
def test_long_inputs_agree_between_no_grad_and_autograd_tiny(family, seconds, tolerance):
    model = tiny_student(family)
    waves, lengths = padded_batch(seconds)
    assert max_difference(model, waves, lengths) <= tolerance


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [16.0, 40.0])
@pytest.mark.parametrize("preset", PRESETS)
def test_long_inputs_agree_between_no_grad_and_autograd_full_size(preset, seconds):
    """Random full-size weights amplify summation-order differences: 1e-4."""
    torch.manual_seed(0)
    model = build_student(preset).eval()
    waves, lengths = padded_batch([seconds])
    assert max_difference(model, waves, lengths) <= 1e-4
