"""The length-bucket sampler's promises that the mutation run of group ``recognizer2`` found
untested (docs/development.md, Mutation testing): equal durations mixed differently every epoch,
``drop_last`` keeping a full last batch, and the refusals and the warning in words."""

from __future__ import annotations

import logging

import pytest

from recycle_distill.downstreams.cif_asr import sampler as sampler_module
from recycle_distill.downstreams.cif_asr.sampler import DurationSortedBatchSampler


def groups(batches: list[list[int]]) -> set[tuple[int, ...]]:
    return {tuple(sorted(batch)) for batch in batches}


def test_equal_durations_are_grouped_differently_every_epoch():
    sampler = DurationSortedBatchSampler([1.0] * 12, batch_size=3, seed=0)
    epochs = [sampler.batches(epoch) for epoch in range(3)]
    for batches in epochs:
        assert sorted(i for batch in batches for i in batch) == list(range(12))
    assert groups(epochs[0]) != groups(epochs[1]) and groups(epochs[1]) != groups(epochs[2])
    fixed = DurationSortedBatchSampler([1.0] * 12, batch_size=3, shuffle=False)
    assert fixed.batches(0) == fixed.batches(1) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]


def test_drop_last_keeps_a_full_last_batch():
    sampler = DurationSortedBatchSampler([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], batch_size=3, shuffle=False, drop_last=True)
    assert sampler.batches(0) == [[0, 1, 2], [3, 4, 5]] and len(sampler) == 2


@pytest.mark.parametrize("max_seconds", [0, -1.5])
def test_a_batch_of_no_seconds_is_refused(max_seconds):
    with pytest.raises(ValueError) as error:
        DurationSortedBatchSampler([1.0], batch_size=2, max_seconds=max_seconds)
    assert str(error.value) == f"max_seconds must be > 0, got {max_seconds}"


def test_utterances_longer_than_a_batch_are_counted_in_the_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=sampler_module.__name__):
        sampler = DurationSortedBatchSampler([1.0, 4.0, 5.0], batch_size=3, max_seconds=3.0, shuffle=False)
    assert [record.getMessage() for record in caplog.records] == [
        "2 utterances are longer than max_seconds=3.0: each forms a batch alone"]
    assert sampler.batches(0) == [[0], [1], [2]]
