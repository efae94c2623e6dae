"""Beam search's promises that the mutation run of group ``recognizer`` found untested
(docs/development.md, Mutation testing): lengths outside [0, N] (negative, zero, past the CIF
vectors), an empty batch, and the ``max_steps`` guard with its warning. Transcripts come from a
real :class:`CifDecoder` at beam 4 and are compared with the search of the same utterance alone."""

from __future__ import annotations

import logging

import pytest
import torch

from recycle_distill.downstreams.cif_asr import beam_search as beam_module
from recycle_distill.downstreams.cif_asr.beam_search import beam_search
from recycle_distill.downstreams.cif_asr.decoder import CifDecoder

VOCAB, DIM, BOS, EOS = 12, 16, 1, 2


@pytest.fixture(scope="module")
def decoder() -> CifDecoder:
    """A random float64 decoder with sharp distributions (beams reorder; no near-ties)."""
    torch.manual_seed(3)
    model = CifDecoder(VOCAB, DIM, layers=2, heads=4, ffn_dim=32, dropout=0.0).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3.0)
    return model


def search(decoder, cif, lengths, **kwargs) -> list[list[int]]:
    return beam_search(decoder, cif, torch.as_tensor(lengths), bos=BOS, eos=EOS, beam_size=4, banned=[0], **kwargs)


def alone(decoder, cif_row, length: int) -> list[int]:
    """The transcript of one utterance searched by itself over its first ``length`` vectors."""
    return search(decoder, cif_row[None, :length], [length])[0]


def test_lengths_are_clamped_to_the_cif_vectors(decoder):
    """A negative or zero length decodes nothing; one past the N vectors decodes the N."""
    torch.manual_seed(0)
    cif = torch.randn(4, 6, DIM, dtype=torch.float64)
    got = search(decoder, cif, [6, 0, -3, 20])
    assert got == [alone(decoder, cif[0], 6), [], [], alone(decoder, cif[3], 6)]
    assert got[0] and got[3]  # something was decoded: the comparison means something


def test_nothing_to_decode_gives_empty_transcripts(decoder):
    assert search(decoder, torch.zeros(2, 3, DIM, dtype=torch.float64), [0, 0]) == [[], []]
    assert search(decoder, torch.zeros(2, 3, DIM, dtype=torch.float64), [-1, -2]) == [[], []]
    assert search(decoder, torch.zeros(0, 3, DIM, dtype=torch.float64), torch.zeros(0, dtype=torch.long)) == []


def test_max_steps_truncates_and_warns_only_past_the_guard(decoder, caplog):
    torch.manual_seed(1)
    cif = torch.randn(3, 7, DIM, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger=beam_module.__name__):
        assert search(decoder, cif, [7, 4, 2], max_steps=7) == search(decoder, cif, [7, 4, 2])
        assert caplog.records == []  # exactly max_steps firings: nothing truncated
        truncated = search(decoder, cif, [7, 4, 2], max_steps=4)
    assert truncated == [alone(decoder, cif[0], 4), alone(decoder, cif[1], 4), alone(decoder, cif[2], 2)]
    assert truncated != search(decoder, cif, [7, 4, 2])
    assert [record.getMessage() for record in caplog.records] == [
        "beam search: 1 utterance(s) fire more than max_steps=4 times; decoding their first 4 firings only"]
