"""The feature cache's promises that the mutation run of group ``recognizer`` found untested
(docs/development.md, Mutation testing): the index a killed or failed build leaves on disk, the
on-disk hash format an older cache is reused by, what a rebuild reports and logs, and the exact
one-line messages of a failed write, an unreadable shard and a foreign or malformed folder.

Every vector is read back through :class:`FeatureCache` and compared with the teacher's own
output for that utterance alone."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle

import pytest
import safetensors
import safetensors.torch
import torch
from safetensors.torch import save_file

from recycle_distill.downstreams.cif_asr import feature_cache
from recycle_distill.downstreams.cif_asr.feature_cache import (
    CACHE_FORMAT,
    FeatureCache,
    FeatureCacheError,
    build_cache,
)
from recycle_distill.util.messages import plain, short_repr

DAMAGED = "re-run `recycle-distill cif-prepare` with a new --cache folder"
RERUN = "re-run `recycle-distill cif-prepare`"
KEPT = "the cache keeps the shards it had: run the same command again once the cause is fixed"


class IdTeacher:
    """A teacher without a model whose (N+1, D) vectors depend on the utterance's ids alone."""

    def __init__(self, fingerprint: str = "f" * 64, hidden_size: int = 3):
        self.fingerprint, self.hidden_size = fingerprint, hidden_size

    def vectors(self, seqs, names=None, batch_size=64):
        # (N+1, D): row 0 is 0.5, row n the n-th id, channel c multiplied by c + 1
        scale = torch.arange(1, self.hidden_size + 1)
        return [torch.tensor([0.5] + [float(value) for value in ids]).unsqueeze(1) * scale for ids in seqs]


class DiesFirst(IdTeacher):
    """Killed in its first forward pass (before any shard)."""

    def vectors(self, seqs, names=None, batch_size=64):
        raise KeyboardInterrupt


ITEMS = [("utt0", [5, 6]), ("utt1", [7]), ("utt2", [8, 9, 10])]


def reads_back(folder, teacher, items) -> FeatureCache:
    cache = FeatureCache.open(folder, teacher.fingerprint)
    for utt_id, ids in items:
        torch.testing.assert_close(cache.get(utt_id), teacher.vectors([ids])[0], rtol=0, atol=0)
    return cache


def index_of(folder) -> dict:
    return json.loads((folder / "index.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- what a build leaves on disk


def test_a_cache_is_read_back_and_knows_its_utterances_and_fingerprint(tmp_path):
    teacher = IdTeacher()
    build_cache(tmp_path / "c", ITEMS, teacher, shard_size=2, batch_size=1, progress=False)
    cache = reads_back(tmp_path / "c", teacher, ITEMS)
    assert cache.fingerprint == teacher.fingerprint and len(cache) == 3
    assert "utt1" in cache and "utt9" not in cache and cache.ids == ["utt0", "utt1", "utt2"]


def test_a_cache_that_has_read_crosses_into_a_spawned_worker(tmp_path):
    """DataLoader workers started by spawn receive the cache pickled: open shard handles cannot
    be pickled, so they stay behind and the copy reopens its own."""
    teacher = IdTeacher()
    build_cache(tmp_path / "c", ITEMS, teacher, progress=False)
    cache = reads_back(tmp_path / "c", teacher, ITEMS)
    copy = pickle.loads(pickle.dumps(cache))
    torch.testing.assert_close(copy.get("utt2"), teacher.vectors([ITEMS[2][1]])[0], rtol=0, atol=0)


def test_a_torch_dtype_names_the_storage_dtype(tmp_path):
    teacher = IdTeacher()
    build_cache(tmp_path / "c", ITEMS, teacher, dtype=torch.float16, progress=False)
    assert index_of(tmp_path / "c")["dtype"] == "float16"
    reads_back(tmp_path / "c", teacher, ITEMS)  # the vectors are small integers: exact in float16


def test_an_unknown_dtype_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ValueError) as error:
        build_cache(tmp_path / "c", ITEMS, IdTeacher(), dtype=torch.int8, progress=False)
    assert str(error.value) == "cache dtype must be one of float32, float16, bfloat16, got torch.int8"


def test_a_cache_folder_may_be_nested_in_new_folders(tmp_path):
    teacher = IdTeacher()
    build_cache(tmp_path / "a" / "b" / "cache", ITEMS, teacher, progress=False)
    reads_back(tmp_path / "a" / "b" / "cache", teacher, ITEMS)


def test_an_utterance_id_given_twice_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(FeatureCacheError) as error:
        build_cache(tmp_path / "c", ITEMS + [("utt1", [9])], IdTeacher(), progress=False)
    assert str(error.value) == f"utterance id utt1 appears twice in the items for {tmp_path / 'c'}"
    assert not (tmp_path / "c" / "index.json").exists()


def test_the_index_records_the_language_from_the_first_marker_on(tmp_path):
    """A build killed before its first shard leaves the marker index with the language; a resumed
    build without a language keeps it, one with another language records that one with its shard."""
    folder = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        build_cache(folder, ITEMS, DiesFirst(), language="en", progress=False)
    assert index_of(folder)["language"] == "en" and FeatureCache.open(folder, "f" * 64).language == "en"
    build_cache(folder, ITEMS, IdTeacher(), progress=False)
    assert FeatureCache.open(folder, "f" * 64).language == "en"
    build_cache(folder, ITEMS + [("utt3", [11])], IdTeacher(), language="zh", progress=False)
    assert FeatureCache.open(folder, "f" * 64).language == "zh"


def test_a_build_that_reuses_everything_records_a_new_language(tmp_path):
    folder = tmp_path / "cache"
    build_cache(folder, ITEMS, IdTeacher(), language="en", progress=False)
    before = index_of(folder)["shards"]
    report = build_cache(folder, ITEMS, IdTeacher(), language="zh", progress=False)
    assert report.shards_written == 0 and index_of(folder)["shards"] == before
    assert FeatureCache.open(folder, "f" * 64).language == "zh"
    build_cache(folder, ITEMS, IdTeacher(), progress=False)  # no language given: the recorded one stays
    assert FeatureCache.open(folder, "f" * 64).language == "zh"


def test_the_index_temporaries_carry_the_prefix_a_later_build_deletes(tmp_path, monkeypatch):
    """Whatever a kill leaves while the index is being written must be named so that the next
    build recognises it as its own leftover (``.tmp-``) and deletes it."""
    folder = tmp_path / "c"
    seen: list[list[str]] = []
    real_dump = json.dump

    def watching_dump(data, handle, **kwargs):
        seen.append(sorted(path.name for path in folder.iterdir()))
        return real_dump(data, handle, **kwargs)

    monkeypatch.setattr(feature_cache.json, "dump", watching_dump)
    build_cache(folder, ITEMS, IdTeacher(), progress=False)
    assert seen and all(any(name.startswith(".tmp-") for name in names) for names in seen)
    assert all(name in ("index.json", "shard-00000.safetensors") or name.startswith(".tmp-")
               for names in seen for name in names)


def test_an_index_hash_is_sha1_of_the_comma_joined_ids(tmp_path):
    """The hash is a file format: a cache written by an earlier build (or by hand) with the same
    ids is reused, not recomputed."""
    folder = tmp_path / "c"
    folder.mkdir()
    teacher = IdTeacher(fingerprint="fp", hidden_size=3)
    vectors = {utt_id: teacher.vectors([ids])[0] for utt_id, ids in ITEMS}
    save_file(vectors, str(folder / "shard-00000.safetensors"))
    entries = {utt_id: {"shard": "shard-00000.safetensors", "key": utt_id, "shape": [len(ids) + 1, 3],
                        "ids": hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:16]}
               for utt_id, ids in ITEMS}
    (folder / "index.json").write_text(json.dumps({
        "format": CACHE_FORMAT, "fingerprint": "fp", "language": None, "dtype": "float32", "hidden_size": 3,
        "shards": ["shard-00000.safetensors"], "entries": entries}))
    report = build_cache(folder, ITEMS, teacher, progress=False)
    assert (report.computed, report.reused, report.shards_written) == (0, 3, 0)
    FeatureCache.open(folder, "fp").check(ITEMS)


# ----------------------------------------------------------------------------- rebuilding another teacher's cache


def old_cache(folder, **index):
    """A folder holding the index of an earlier format version of ours (``/0``) and one shard."""
    folder.mkdir()
    save_file({"u": torch.zeros(2, 3)}, str(folder / "shard-00000.safetensors"))
    (folder / "index.json").write_text(json.dumps({"format": "cif-asr-feature-cache/0", **index}))
    return folder


@pytest.mark.parametrize("fingerprint, reported", [
    (None, "cif-asr-feature-cache/0"),  # an index without a fingerprint: its format instead
    ("p" * 200, "p" * 200),
    ("p" * 201, short_repr("p" * 201)),
    ("p" * 300, short_repr("p" * 300)),
    ("one\nline", short_repr("one\nline")),
    (12345, short_repr(12345)),
])
def test_a_rebuild_reports_the_previous_fingerprint_as_one_bounded_line(tmp_path, fingerprint, reported):
    extra = {} if fingerprint is None else {"fingerprint": fingerprint}
    folder = old_cache(tmp_path / "c", **extra)
    teacher = IdTeacher()
    report = build_cache(folder, ITEMS, teacher, progress=False)
    assert report.rebuilt and report.previous_fingerprint == reported
    reads_back(folder, teacher, ITEMS)


def test_a_rebuild_logs_what_it_deletes(tmp_path, caplog):
    folder = old_cache(tmp_path / "c", fingerprint="old", dtype="float16")
    with caplog.at_level(logging.WARNING, logger=feature_cache.__name__):
        build_cache(folder, ITEMS, IdTeacher(), progress=False)
    assert [record.getMessage() for record in caplog.records] == [
        f"feature cache {folder} was built with fingerprint 'old' (dtype 'float16', format "
        f"'cif-asr-feature-cache/0'), the teacher has {'f' * 64}: deleting its shards and rebuilding"]


def test_a_rebuild_whose_new_index_cannot_be_written_leaves_nothing_of_the_old_cache(tmp_path, monkeypatch):
    """The old index and shards are deleted before the new marker is written: when that write
    fails, no index may be left listing shards that are gone, nor shards no index lists."""
    folder = old_cache(tmp_path / "c", fingerprint="old", dtype="float32")
    (folder / "notes.txt").write_text("mine")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feature_cache, "atomic_write", full)
    with pytest.raises(FeatureCacheError) as error:
        build_cache(folder, ITEMS, IdTeacher(), progress=False)
    assert str(error.value) == (f"feature cache {folder}: could not write index.json (No space left on device); "
                                f"{KEPT}")
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]


def test_a_new_folder_whose_marker_cannot_be_written_is_taken_away_again(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feature_cache, "atomic_write", full)
    with pytest.raises(FeatureCacheError, match=r"could not write index.json \(No space left on device\)"):
        build_cache(tmp_path / "new", ITEMS, IdTeacher(), progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FeatureCacheError):
        build_cache(tmp_path / "mine", ITEMS, IdTeacher(), progress=False)
    assert sorted(path.name for path in (tmp_path / "mine").iterdir()) == ["notes.txt"]


class SafetensorError(Exception):
    """Stands for safetensors' own error type: no ``strerror``, a message over several lines."""


@pytest.mark.parametrize("reason, shown", [
    ("header\n   too   large", "header too large"),
    ("x" * 250, plain("x" * 250, 200)),
])
def test_a_shard_write_error_without_strerror_is_one_bounded_line(tmp_path, monkeypatch, reason, shown):
    def failing(*args, **kwargs):
        raise SafetensorError(reason)

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(FeatureCacheError) as error:
        build_cache(tmp_path / "c", ITEMS, IdTeacher(), progress=False)
    assert str(error.value) == (f"feature cache {tmp_path / 'c'}: could not write shard-00000.safetensors "
                                f"({shown}); {KEPT}")


# ----------------------------------------------------------------------------- reading


def test_check_names_counts_and_the_first_three_of_each_kind(tmp_path):
    teacher = IdTeacher()
    items = [(f"u{n}", [5 + n]) for n in range(5)]
    build_cache(tmp_path / "c", items, teacher, progress=False)
    cache = FeatureCache.open(tmp_path / "c", teacher.fingerprint)
    asked = [(f"m{n}", [1]) for n in range(4)] + [(f"u{n}", [6 + n]) for n in range(4)]
    with pytest.raises(FeatureCacheError) as error:
        cache.check(asked)
    assert str(error.value) == (f"feature cache {tmp_path / 'c'}: 4 utterances missing (e.g. m0, m1, m2); "
                                f"4 with other transcripts (e.g. u0, u1, u2); {RERUN} for these splits")


@pytest.mark.parametrize("content, shown", [(b"\x00not json", "'unreadable'"), (b"[1, 2]", "'unreadable'"),
                                            (b'{"format": "other/2"}', "'other/2'")])
def test_opening_an_index_of_another_format_names_it(tmp_path, content, shown):
    (tmp_path / "index.json").write_bytes(content)
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(tmp_path, "fp")
    assert str(error.value) == f"feature cache {tmp_path} has format {shown}, expected {CACHE_FORMAT!r}; {RERUN}"


def hand_written(folder, hidden: int, rows: int, tensor=None):
    folder.mkdir(exist_ok=True)
    if tensor is not None:
        save_file({"u": tensor}, str(folder / "shard-00000.safetensors"))
    (folder / "index.json").write_text(json.dumps({
        "format": CACHE_FORMAT, "fingerprint": "fp", "language": "en", "dtype": "float32", "hidden_size": hidden,
        "shards": ["shard-00000.safetensors"],
        "entries": {"u": {"shard": "shard-00000.safetensors", "key": "u", "shape": [rows, hidden], "ids": "0"}}}))
    return folder


def test_the_smallest_and_largest_declared_sizes_are_accepted(tmp_path):
    """One vector of width 1 reads back; the largest width and row count an index may declare open."""
    small = hand_written(tmp_path / "small", 1, 1, torch.full((1, 1), 2.5))
    assert torch.equal(FeatureCache.open(small, "fp").get("u"), torch.full((1, 1), 2.5))
    assert FeatureCache.open(hand_written(tmp_path / "big", 1 << 16, 1_000_000), "fp").hidden_size == 1 << 16
    with pytest.raises(FeatureCacheError, match=r"entries\['u'\]\.shape must be \[rows, hidden_size\] with rows in "
                                                r"\[1, 1000000\]"):
        FeatureCache.open(hand_written(tmp_path / "big", 4, 1_000_001), "fp")


def test_an_index_that_is_not_a_regular_file_is_refused_and_kept(tmp_path):
    """A symlinked index.json (even to a valid index of ours) or a folder of that name."""
    elsewhere = hand_written(tmp_path / "elsewhere", 3, 2)
    for kind in ("symlink", "folder"):
        folder = tmp_path / kind
        folder.mkdir()
        if kind == "symlink":
            (folder / "index.json").symlink_to(elsewhere / "index.json")
        else:
            (folder / "index.json").mkdir()
        with pytest.raises(FeatureCacheError) as error:
            build_cache(folder, ITEMS, IdTeacher("fp"), progress=False)
        assert str(error.value) == (f"{folder} is not a recycle-distill feature cache (its index.json is not a "
                                    f"regular file) and holds index.json; nothing was deleted: give --cache a new "
                                    f"or empty folder")
        assert [path.name for path in folder.iterdir()] == ["index.json"]
    assert index_of(elsewhere)["hidden_size"] == 3


class Handle:
    """A shard handle whose tensor cannot be read."""

    def keys(self):
        return ["u"]

    def get_tensor(self, key):
        raise RuntimeError("offsets out of range")


def test_a_vector_that_cannot_be_read_names_the_shard_and_the_key(tmp_path, monkeypatch):
    folder = hand_written(tmp_path / "c", 3, 2, torch.zeros(2, 3))
    monkeypatch.setattr(safetensors, "safe_open", lambda *args, **kwargs: Handle())
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, "fp").get("u")
    assert str(error.value) == (f"feature cache {folder / 'shard-00000.safetensors'}: vectors 'u' cannot be read "
                                f"(RuntimeError); {DAMAGED}")


def test_a_shard_that_cannot_be_opened_is_one_bounded_line(tmp_path, monkeypatch):
    folder = hand_written(tmp_path / "c", 3, 2, torch.zeros(2, 3))
    text = "header\n" + "y" * 400

    def refuse(*args, **kwargs):
        raise OSError(text)

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, "fp").get("u")
    assert str(error.value) == (f"feature cache {folder / 'shard-00000.safetensors'}: cannot be read "
                                f"(OSError: {short_repr('header ' + 'y' * 400, 200)}); {DAMAGED}")


# ----------------------------------------------------------------------------- how the teacher is driven


class Recording(IdTeacher):
    """Records each forward pass: the utterances' ids, their names and the batch size asked for."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[list[list[int]], list[str], int]] = []

    def vectors(self, seqs, names=None, batch_size=64):
        self.calls.append((list(seqs), list(names or []), batch_size))
        return super().vectors(seqs)


def test_shards_and_batches_of_one_and_batches_of_similar_length(tmp_path):
    items = [("a", [5]), ("b", [5, 6, 7]), ("c", [8]), ("d", [6, 7, 8])]
    teacher = Recording()
    report = build_cache(tmp_path / "one", items, teacher, shard_size=1, batch_size=1, progress=False)
    assert report.shards_written == 4 and len(index_of(tmp_path / "one")["shards"]) == 4
    assert [(names, size) for _, names, size in teacher.calls] == [(["a"], 1), (["b"], 1), (["c"], 1), (["d"], 1)]
    reads_back(tmp_path / "one", teacher, items)
    teacher = Recording()
    build_cache(tmp_path / "two", items, teacher, shard_size=4, batch_size=2, progress=False)
    # the teacher pads a batch to its longest utterance: the short ones go together
    assert [(names, size) for _, names, size in teacher.calls] == [(["a", "c"], 2), (["b", "d"], 2)]
    assert [seqs for seqs, _, _ in teacher.calls] == [[[5], [8]], [[5, 6, 7], [6, 7, 8]]]
    reads_back(tmp_path / "two", teacher, items)
    for asked in (1, 0):  # batches of one within a shard of four (0 counts as 1)
        teacher = Recording()
        build_cache(tmp_path / f"batch{asked}", items, teacher, shard_size=4, batch_size=asked, progress=False)
        assert [(names, size) for _, names, size in teacher.calls] == [(["a"], 1), (["c"], 1), (["b"], 1), (["d"], 1)]
        reads_back(tmp_path / f"batch{asked}", teacher, items)


def test_a_shard_names_its_format_and_teacher(tmp_path):
    build_cache(tmp_path / "c", ITEMS, IdTeacher(), progress=False)
    with safetensors.safe_open(str(tmp_path / "c" / "shard-00000.safetensors"), framework="pt") as shard:
        assert shard.metadata() == {"format": CACHE_FORMAT, "fingerprint": "f" * 64}


def test_a_build_logs_what_it_computed_and_reused(tmp_path, caplog):
    build_cache(tmp_path / "c", ITEMS[:1], IdTeacher(), progress=False)
    with caplog.at_level(logging.INFO, logger=feature_cache.__name__):
        build_cache(tmp_path / "c", ITEMS, IdTeacher(), shard_size=1, progress=False)
    assert [record.getMessage() for record in caplog.records] == [
        f"feature cache {tmp_path / 'c'}: 2 computed, 1 reused, 2 new shards"]


def test_the_progress_bar_counts_reused_utterances_and_is_silent_when_off(tmp_path, capsys):
    build_cache(tmp_path / "c", ITEMS[:1], IdTeacher(), progress=True)
    first = capsys.readouterr().err
    assert "teacher vectors" in first and "1/1" in first
    build_cache(tmp_path / "c", ITEMS, IdTeacher(), progress=True)
    bar = capsys.readouterr().err.split("\r")[-1]
    assert bar.startswith("teacher vectors: 100%") and "3/3" in bar and "utt/s" in bar
    build_cache(tmp_path / "d", ITEMS, IdTeacher(), progress=False)
    assert capsys.readouterr().err == ""
    build_cache(tmp_path / "e", ITEMS, IdTeacher())  # `cif-prepare` shows the bar: it is the default
    assert "teacher vectors" in capsys.readouterr().err
