"""Beam search with the real decoder: the incremental search, which keeps each layer's keys and
values and reorders them when hypotheses are reselected, must give the transcripts of a cache-free
search that recomputes every hypothesis's whole prefix at each step.

The stub decoders of ``test_cif_asr_model.py`` have no key/value cache, and beam 1 never reorders
one, so only a real :class:`CifDecoder` at beam > 1 sees a reorder that moves the keys of one
hypothesis with the values of another (issue 21: beam-4 transcripts changed for 5 of 20 random
decoders)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from recycle_distill.downstreams.cif_asr.beam_search import beam_search
from recycle_distill.downstreams.cif_asr.decoder import CifDecoder, DecoderCache

VOCAB, DIM, BOS, EOS = 12, 16, 1, 2
LENGTHS = torch.tensor([7, 5, 6])
DECODERS = 20


@pytest.fixture(autouse=True)
def one_thread():
    """Hundreds of tiny float64 steps: at two threads on two loaded cores OpenMP's hand-offs made
    a test 0.2 s -> 7 s (measured); float64 keeps the result the same at any count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class PrefixCache:
    """The whole prefix of every hypothesis: tokens (B, t) from ``<bos>`` and CIF vectors (B, t, d)."""

    tokens: torch.Tensor
    cif: torch.Tensor

    def reorder(self, index: torch.Tensor) -> "PrefixCache":
        return PrefixCache(self.tokens.index_select(0, index), self.cif.index_select(0, index))


class RecomputingDecoder:
    """A :class:`CifDecoder` stepped without its key/value cache: each step runs the teacher-forced
    ``forward`` over the hypothesis's whole prefix and keeps the last position."""

    def __init__(self, decoder: CifDecoder):
        self.decoder = decoder

    def step(self, prev_token, prev_cif, cif, cache=None):
        tokens = prev_token.unsqueeze(1)  # (B, 1)
        vectors = cif.unsqueeze(1)  # (B, 1, d)
        if cache is not None:
            tokens = torch.cat([cache.tokens, tokens], dim=1)  # (B, t)
            vectors = torch.cat([cache.cif, vectors], dim=1)  # (B, t, d)
        out = self.decoder(tokens, vectors)
        return out.logits[:, -1], out.state[:, -1], PrefixCache(tokens, vectors)


def random_decoder(seed: int) -> tuple[CifDecoder, torch.Tensor]:
    """A random 2-layer decoder in float64 (so that the two searches' scores agree to ~1e-12 and
    no near-tie flips a choice) and its (3, 7, d) CIF vectors."""
    torch.manual_seed(seed)
    decoder = CifDecoder(VOCAB, DIM, layers=2, heads=4, ffn_dim=32, dropout=0.0).double().eval()
    with torch.no_grad():
        for parameter in decoder.parameters():  # sharper distributions than the init: beams reorder more
            parameter.mul_(3.0)
    cif = torch.randn(len(LENGTHS), int(LENGTHS.max()), DIM, dtype=torch.float64)
    return decoder, cif


def transcripts(decoder, cif: torch.Tensor, beam: int) -> list[list[int]]:
    return beam_search(decoder, cif, LENGTHS, bos=BOS, eos=EOS, beam_size=beam, banned=[0])


def differing_decoders(beam: int) -> list[int]:
    """Seeds whose cached and cache-free transcripts differ."""
    differ = []
    for seed in range(DECODERS):
        decoder, cif = random_decoder(seed)
        if transcripts(decoder, cif, beam) != transcripts(RecomputingDecoder(decoder), cif, beam):
            differ.append(seed)
    return differ


@pytest.mark.parametrize("beam", [4, 2])
def test_cached_beam_search_equals_recomputing_the_prefix(beam):
    assert differing_decoders(beam) == []


def test_the_reference_search_reselects_hypotheses():
    """The comparison above means something only if beams are reselected: the beam-4 result is not
    the greedy one for some decoders (a search that never reorders could not catch a bad reorder)."""
    changed = 0
    for seed in range(DECODERS):
        decoder, cif = random_decoder(seed)
        changed += transcripts(decoder, cif, 4) != transcripts(decoder, cif, 1)
    assert changed >= 3


@pytest.mark.parametrize("planted", ["keys only", "values only", "the newest values in place"])
def test_a_reorder_that_mixes_keys_and_values_is_caught(monkeypatch, planted):
    """Planted bugs in ``DecoderCache.reorder``: the test above fails for each of them (keys
    only: 10 of the 20 decoders give other transcripts, values only: 12)."""

    def wrong_reorder(self, index):
        keys = [k.index_select(0, index) for k in self.keys]
        values = [v.index_select(0, index) for v in self.values]
        if planted == "keys only":
            values = list(self.values)
        elif planted == "values only":
            keys = list(self.keys)
        else:  # every step's values reordered but the newest one's
            values = [torch.cat([v[:, :, :-1].index_select(0, index), v[:, :, -1:]], dim=2) for v in self.values]
        return DecoderCache(keys, values)

    monkeypatch.setattr(DecoderCache, "reorder", wrong_reorder)
    assert differing_decoders(4) != []
