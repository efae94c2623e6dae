"""The fast blocks' blocked attention (``_blocked_attention``) against float64 attention, in every
blocking it takes: whole maps, blocks of heads, blocks of query rows; with and without a map kept."""

from __future__ import annotations

import pytest
import torch

from recycle_distill.inference.blocks import attention

# float32: T-term sums of products of O(1) values, each rounded at 2^-24: 1e-5 relative is ~100x that.
# bf16: inputs, scores, probabilities and output each rounded at 2^-9 (~2e-3): four roundings
# stay under 1e-2 of the output's L2 norm.
BOUND = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def reference(q, k, v, mask):
    scores = q.double() @ k.double().transpose(-1, -2)
    scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return probs, probs @ v.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", ["whole maps", "head blocks", "row blocks"])
@pytest.mark.parametrize("keep_map", [False, True])
def test_blocked_attention_equals_float64_attention(dtype, chunk, keep_map, monkeypatch):
    batch, heads, time, dim = 2, 6, 33, 8
    itemsize = torch.empty((), dtype=dtype).element_size()
    budget = {"whole maps": 1 << 30, "head blocks": 2 * itemsize * time * time, "row blocks": 5 * itemsize * time}[chunk]
    monkeypatch.setattr(attention, "CHUNK_BYTES", budget)
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(batch, heads, time, dim, generator=generator).to(dtype) for _ in range(3))
    mask = torch.zeros(batch, time, dtype=torch.bool)
    mask[1, 25:] = True
    probs = q.new_empty(batch, heads, time, time) if keep_map else None
    with torch.inference_mode():
        out = attention._blocked_attention(q, k, v, mask, probs)
    want_probs, want = reference(q, k, v, mask)
    assert ((out.double() - want).norm() / want.norm()).item() < BOUND[dtype]
    if keep_map:
        assert ((probs.double() - want_probs).norm() / want_probs.norm()).item() < BOUND[dtype]
    assert torch.all(out[1].isfinite())


def test_bf16_maps_take_twice_the_heads_of_float32_maps_per_block():
    in_float32 = attention._blocks(1, 12, 499, 4)
    in_bf16 = attention._blocks(1, 12, 499, 2)
    assert len(in_float32) == 2 * len(in_bf16)
    for blocks in (in_float32, in_bf16):  # every head of the item exactly once, whole rows
        assert sorted(h for _, s, _ in blocks for h in range(s.start, s.stop)) == list(range(12))
