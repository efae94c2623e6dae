"""The feature cache read back after what can go wrong in a build: an interrupted and resumed
build, a changed tokenizer file, transcripts whose ids differ only in how digits group, and a
float16 cache. Every check reads vectors back through :class:`FeatureCache` and compares them with
the language model's own output for that utterance alone (no batching, no padding)."""

from __future__ import annotations

import shutil

import pytest
import torch

from helpers.cif_asr_data import write_tiny_bert
from recycle_distill.downstreams.cif_asr.feature_cache import FeatureCache, FeatureCacheError, build_cache
from recycle_distill.downstreams.cif_asr.lm_teacher import LanguageModelTeacher, folder_fingerprint

TOKENS = ["the", "cat", "##s", "sat", "on", "mat", "dog", "ran", "red", "a", "big", "small"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("bert"), TOKENS)


@pytest.fixture(scope="module")
def teacher(bert):
    return LanguageModelTeacher.from_dir(bert)


def items(count: int = 8) -> list[tuple[str, list[int]]]:
    """Utterances with distinct id sequences of 1..4 tokens (vocabulary ids 5..16)."""
    return [(f"utt{n}", [5 + (n * 7 + step * 3) % 12 for step in range(1 + n % 4)]) for n in range(count)]


def alone(teacher, ids: list[int]) -> torch.Tensor:
    """The model's vectors for one utterance run by itself (N+1, D)."""
    return teacher.vectors([ids], batch_size=1)[0]


def assert_reads_back(folder, teacher, expected_items, dtype_tolerance: float = 1e-6) -> None:
    cache = FeatureCache.open(folder, teacher.fingerprint)
    assert sorted(cache.ids) == sorted(utt_id for utt_id, _ in expected_items)
    for utt_id, ids in expected_items:
        got = cache.get(utt_id)
        assert got.dtype == torch.float32 and got.shape == (len(ids) + 1, teacher.hidden_size), utt_id
        torch.testing.assert_close(got, alone(teacher, ids), atol=dtype_tolerance, rtol=dtype_tolerance,
                                   msg=lambda message: f"{utt_id}: {message}")


class DiesAt:
    """The teacher, raising KeyboardInterrupt on its ``call``-th ``vectors`` call."""

    def __init__(self, teacher, call: int):
        self.teacher, self.call, self.calls = teacher, call, 0
        self.fingerprint, self.hidden_size = teacher.fingerprint, teacher.hidden_size

    def vectors(self, seqs, names=None, batch_size=64):
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt
        return self.teacher.vectors(seqs, names=names, batch_size=batch_size)


def test_an_interrupted_build_resumes_and_every_utterance_reads_back(tmp_path, teacher):
    folder = tmp_path / "cache"
    everything = items(8)
    # Shards of 3, batches of 2 (2 calls per shard): call 5 is in the third shard, after two shards
    # were written, so the resumed build must add its shards beside them, not over them.
    with pytest.raises(KeyboardInterrupt):
        build_cache(folder, everything, DiesAt(teacher, 5), shard_size=3, batch_size=2, progress=False)
    assert_reads_back(folder, teacher, everything[:6])
    before = {path.name: path.read_bytes() for path in folder.glob("shard-*")}
    assert sorted(before) == ["shard-00000.safetensors", "shard-00001.safetensors"]

    report = build_cache(folder, everything, teacher, shard_size=3, batch_size=2, progress=False)
    assert (report.computed, report.reused, report.shards_written) == (2, 6, 1)
    assert {name: (folder / name).read_bytes() for name in before} == before  # untouched
    assert_reads_back(folder, teacher, everything)

    # A second resume with more utterances (a later split) adds to the same cache.
    more = everything + [("extra0", [9, 10]), ("extra1", [11])]
    report = build_cache(folder, more, teacher, shard_size=3, batch_size=2, progress=False)
    assert (report.computed, report.reused, report.shards_written) == (2, 8, 1)
    assert_reads_back(folder, teacher, more)


def test_a_changed_transcript_is_recomputed_where_it_was(tmp_path, teacher):
    folder = tmp_path / "cache"
    build_cache(folder, items(5), teacher, shard_size=2, progress=False)
    changed = [(utt_id, ids if utt_id != "utt1" else [16, 15, 14]) for utt_id, ids in items(5)]
    report = build_cache(folder, changed, teacher, shard_size=2, progress=False)
    assert (report.computed, report.reused) == (1, 4)
    assert_reads_back(folder, teacher, changed)


@pytest.mark.parametrize("first, second", [([11, 5], [1, 15]), ([16, 1], [1, 6, 1]), ([12, 6], [1, 2, 6])])
def test_ids_that_only_group_digits_differently_are_other_transcripts(tmp_path, teacher, first, second):
    """[1, 23] and [12, 3] (here ids whose decimal digits concatenate alike) are two transcripts."""
    assert "".join(map(str, first)) == "".join(map(str, second))
    folder = tmp_path / "cache"
    build_cache(folder, [("u", first)], teacher, progress=False)
    cache = FeatureCache.open(folder, teacher.fingerprint)
    cache.check([("u", first)])
    with pytest.raises(FeatureCacheError, match=r"1 with other transcripts \(e.g. u\)"):
        cache.check([("u", second)])
    report = build_cache(folder, [("u", second)], teacher, progress=False)
    assert (report.computed, report.reused) == (1, 0)
    assert_reads_back(folder, teacher, [("u", second)])


def changed_copy(bert, tmp_path, name):
    """A copy of the model folder whose file ``name`` gains one trailing newline (same meaning)."""
    copy = tmp_path / "copy"
    shutil.copytree(bert, copy)
    with open(copy / name, "ab") as handle:
        handle.write(b"\n")
    return copy


@pytest.mark.parametrize("name", ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                  "config.json", "model.safetensors"])
def test_the_fingerprint_covers_each_tokenizer_and_model_file_alone(tmp_path, bert, name):
    assert (bert / name).is_file()
    assert folder_fingerprint(changed_copy(bert, tmp_path, name)) != folder_fingerprint(bert)


def test_a_cache_is_refused_and_rebuilt_when_only_the_tokenizer_changed(tmp_path, bert, teacher):
    folder = tmp_path / "cache"
    build_cache(folder, items(3), teacher, progress=False)
    other = LanguageModelTeacher.from_dir(changed_copy(bert, tmp_path, "vocab.txt"))
    with pytest.raises(FeatureCacheError, match="was built with tokenizer/model fingerprint"):
        FeatureCache.open(folder, other.fingerprint)
    report = build_cache(folder, items(3), other, progress=False)
    assert report.rebuilt and (report.computed, report.reused) == (3, 0)


def test_a_float16_cache_returns_float32_within_float16_rounding(tmp_path, teacher):
    folder = tmp_path / "cache"
    build_cache(folder, items(4), teacher, dtype="float16", progress=False)
    assert FeatureCache.open(folder, teacher.fingerprint).dtype == "float16"
    # float16 keeps 11 significant bits: a round-to-nearest error of at most 2^-11 relative
    # (values here are O(1), LayerNorm outputs, far from float16's subnormal range).
    assert_reads_back(folder, teacher, items(4), dtype_tolerance=2.0 ** -11)
