"""The CIF decoder's promises that the mutation run of group ``recognizer`` found untested
(docs/development.md, Mutation testing): the sinusoidal positions at any width (odd ones too), the
whole forward pass against a reference written from ``docs/cif.md``'s equations, dropout on the
attention weights and inside the feed-forward block while training only, and the token
embedding's scale and its PAD row."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recycle_distill.downstreams.cif_asr.decoder import CifDecoder, sinusoidal_positions

POSITIONS = torch.tensor([0, 1, 5, 100])


@pytest.mark.parametrize("dim", [2, 4, 8, 9])
def test_positions_are_sin_then_cos_of_geometric_frequencies(dim):
    """Channel i < half: sin(p / 10000^(i / (half - 1))), channel half + i: the cos; an odd last channel is 0."""
    half = dim // 2
    expected = torch.zeros(len(POSITIONS), dim, dtype=torch.float64)
    for row, position in enumerate(POSITIONS.tolist()):
        for i in range(half):
            angle = position / 10000.0 ** (i / max(half - 1, 1))
            expected[row, i], expected[row, half + i] = math.sin(angle), math.cos(angle)
    got = sinusoidal_positions(POSITIONS, dim)
    assert got.dtype == torch.float32 and got.shape == (len(POSITIONS), dim)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)


def test_an_odd_width_decoder_steps_like_it_teacher_forces():
    torch.manual_seed(0)
    decoder = CifDecoder(10, 9, layers=1, heads=3, ffn_dim=16, dropout=0.0).eval()
    prev, cif = torch.randint(0, 10, (2, 4)), torch.randn(2, 4, 9)
    full, cache, prev_cif = decoder(prev, cif), None, torch.zeros(2, 9)
    for t in range(4):
        logits, _, cache = decoder.step(prev[:, t], prev_cif, cif[:, t], cache)
        torch.testing.assert_close(logits, full.logits[:, t], atol=1e-5, rtol=1e-5)
        prev_cif = cif[:, t]


def positions(count: int, dim: int) -> torch.Tensor:
    """(count, dim) sinusoidal encodings written from the formula (float64)."""
    half = dim // 2
    angles = torch.arange(count, dtype=torch.float64)[:, None] / 10000.0 ** (torch.arange(half) / max(half - 1, 1))
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, dim % 2))


def reference(decoder: CifDecoder, prev: torch.Tensor, cif: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, N, V) and state (B, N, d) of the pre-LN decoder, from its parameters alone."""
    batch, steps, dim = cif.shape
    prev_cif = torch.cat([torch.zeros(batch, 1, dim, dtype=cif.dtype), cif[:, :-1]], dim=1)  # c_0 = 0
    embedded = decoder.embed_scale * decoder.embed.weight[prev]
    x = F.linear(torch.cat([embedded, prev_cif], -1), decoder.input_proj.weight, decoder.input_proj.bias)
    x = x + positions(steps, dim)
    causal = torch.ones(steps, steps, dtype=torch.bool).tril()
    for layer in decoder.layers:
        heads = layer.attention.heads
        normed = F.layer_norm(x, (dim,), layer.attention_norm.weight, layer.attention_norm.bias)
        q, k, v = F.linear(normed, layer.attention.qkv.weight, layer.attention.qkv.bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, steps, heads, dim // heads).transpose(1, 2) for t in (q, k, v))  # (B, H, N, hd)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(dim // heads)).masked_fill(~causal, float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, steps, dim)  # (B, N, d)
        x = x + F.linear(attended, layer.attention.out.weight, layer.attention.out.bias)
        first, second = layer.ffn[0], layer.ffn[3]
        hidden = F.relu(F.linear(F.layer_norm(x, (dim,), layer.ffn_norm.weight, layer.ffn_norm.bias),
                                 first.weight, first.bias))
        x = x + F.linear(hidden, second.weight, second.bias)
    final = F.layer_norm(x, (dim,), decoder.final_norm.weight, decoder.final_norm.bias)
    state = F.linear(torch.cat([final, cif], -1), decoder.output_proj.weight, decoder.output_proj.bias)
    return F.linear(state, decoder.vocab_proj.weight, decoder.vocab_proj.bias), state


def test_the_decoder_computes_the_documented_pre_ln_stack():
    torch.manual_seed(2)
    decoder = CifDecoder(11, 12, layers=2, heads=3, ffn_dim=20, dropout=0.0, embed_scale=4.0).double().eval()
    prev, cif = torch.randint(0, 11, (2, 5)), torch.randn(2, 5, 12, dtype=torch.float64)
    logits, state = reference(decoder, prev, cif)
    with torch.no_grad():
        out = decoder(prev, cif)
    # float64 but for the positions, which the decoder computes in float32 (~1e-7)
    torch.testing.assert_close(out.state, state, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.logits, logits, rtol=1e-6, atol=1e-6)


def dropout_only(p: float, site: str) -> CifDecoder:
    """A decoder dropping only at ``site``: ``attention`` (the attention weights) or ``ffn`` (inside
    the feed-forward block); every other dropout is set to 0."""
    torch.manual_seed(0)
    decoder = CifDecoder(10, 16, layers=2, heads=4, ffn_dim=32, dropout=p)
    inside_ffn = {id(module) for layer in decoder.layers for module in layer.ffn.modules()}
    for module in decoder.modules():
        if isinstance(module, torch.nn.Dropout) and not (site == "ffn" and id(module) in inside_ffn):
            module.p = 0.0
    if site == "ffn":
        for layer in decoder.layers:
            layer.attention.dropout = 0.0
    return decoder


def outputs(decoder: CifDecoder, prev, cif) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced logits and the last incremental step's logits."""
    cache = None
    for t in range(prev.shape[1]):
        logits, _, cache = decoder.step(prev[:, t], cif[:, t - 1] if t else torch.zeros_like(cif[:, 0]), cif[:, t],
                                        cache)
    return decoder(prev, cif).logits, logits


@pytest.mark.parametrize("site", ["attention", "ffn"])
def test_dropout_acts_while_training_only(site):
    prev, cif = torch.randint(0, 10, (3, 6)), torch.randn(3, 6, 16)
    decoder = dropout_only(0.5, site)
    with torch.no_grad():
        decoder.eval()
        reference = outputs(decoder, prev, cif)
        again = outputs(decoder, prev, cif)
        decoder.train()
        torch.manual_seed(1)
        trained = outputs(decoder, prev, cif)
        untouched = dropout_only(0.0, site).train()
        plain = outputs(untouched, prev, cif)
    for ref, same, dropped, without in zip(reference, again, trained, plain):
        torch.testing.assert_close(same, ref, rtol=0, atol=0)
        torch.testing.assert_close(without, ref, rtol=0, atol=0)  # p = 0: training changes nothing
        assert (dropped - ref).abs().max() > 1e-3  # teacher-forced and incremental both drop


def test_the_scaled_token_embedding_is_about_one_per_channel():
    """``embed_scale * embed`` is O(1) per channel at ``embed_scale = sqrt(dim)`` (the original's 16
    for 256): the embedding starts with standard deviation ``dim ** -0.5``; PAD's row is zero."""
    torch.manual_seed(0)
    dim = 64
    decoder = CifDecoder(4000, dim, layers=1, heads=4, ffn_dim=32, embed_scale=math.sqrt(dim), padding_idx=3)
    scaled = decoder.embed_scale * decoder.embed.weight.detach()
    rows = torch.cat([scaled[:3], scaled[4:]])
    assert abs(float(rows.std()) - 1.0) < 0.02
    assert torch.equal(scaled[3], torch.zeros(dim))
    # PAD's row stays zero in training: it gets no gradient
    decoder(torch.tensor([[1, 3, 5, 3]]), torch.randn(1, 4, dim)).logits.sum().backward()
    assert torch.equal(decoder.embed.weight.grad[3], torch.zeros(dim)) and decoder.embed.weight.grad[5].abs().sum() > 0
