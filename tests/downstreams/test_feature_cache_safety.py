"""The CIF-HieraDist feature cache against hostile and careless folders (issue 20, items 4, 14, 17).

``build_cache`` (behind ``recycle-distill cif-prepare --cache``) only ever deletes in a folder that
is recognisably a feature cache of ours; ``FeatureCache`` reads only shards inside the cache and
checks every vector it returns; a damaged index gives one line naming the file and the key.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from recycle_distill.downstreams.cif_asr.feature_cache import (
    CACHE_FORMAT,
    FeatureCache,
    FeatureCacheError,
    build_cache,
)
from recycle_distill.util.messages import short_repr

LONG_SHARD = "shard-" + "9" * 5000 + ".safetensors"
DAMAGED = "re-run `recycle-distill cif-prepare` with a new --cache folder"


class FakeTeacher:
    """The three things ``build_cache`` asks of a language-model teacher, without a model."""

    def __init__(self, fingerprint: str = "f" * 64, hidden_size: int = 4):
        self.fingerprint, self.hidden_size = fingerprint, hidden_size

    def vectors(self, seqs, names=None, batch_size=64):
        return [torch.arange((len(ids) + 1) * self.hidden_size, dtype=torch.float32).reshape(len(ids) + 1, -1)
                for ids in seqs]


ITEMS = [("utt0", [5, 6]), ("utt1", [7])]


def files_of(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


# ----------------------------------------------------------------------------- item 4: whose folder


def test_a_folder_holding_someone_elses_index_is_refused_and_kept(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "index.json").write_text('{"pages": ["a", "b"]}')
    (folder / "shard-00000.safetensors").write_bytes(b"my own shard")
    (folder / ".tmp-notes").write_text("draft")
    (folder / "data.csv").write_text("1,2\n")
    before = files_of(folder)
    with pytest.raises(FeatureCacheError) as error:
        build_cache(folder, ITEMS, FakeTeacher(), progress=False)
    assert str(error.value) == (
        f"{folder} is not a recycle-distill feature cache (its index.json has no 'format': '{CACHE_FORMAT}') "
        "and holds .tmp-notes, data.csv, index.json, shard-00000.safetensors; nothing was deleted: give --cache "
        "a new or empty folder")
    assert files_of(folder) == before


@pytest.mark.parametrize("index, why", [
    (None, "it has no index.json but holds files named like a cache's shards or temporaries"),
    (b"\xff not json", "its index.json is not readable JSON"),
    (b"[1, 2]", f"its index.json has no 'format': '{CACHE_FORMAT}'"),
])
def test_a_folder_that_is_not_our_cache_is_never_emptied(tmp_path, index, why):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "shard-00007.safetensors").write_bytes(b"someone's")
    if index is not None:
        (folder / "index.json").write_bytes(index)
    before = files_of(folder)
    with pytest.raises(FeatureCacheError, match=f"is not a recycle-distill feature cache \\({why}\\)"):
        build_cache(folder, ITEMS, FakeTeacher(), progress=False)
    assert files_of(folder) == before


def test_the_refusal_lists_a_bounded_escaped_sample_of_what_is_there(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "index.json").write_text("{}")
    for number in range(300):
        (folder / (f"file-{number:03d}-" + "x" * 200)).write_text("")
    (folder / "evil\nERROR: injected").write_text("")
    with pytest.raises(FeatureCacheError) as error:
        build_cache(folder, ITEMS, FakeTeacher(), progress=False)
    message = str(error.value)
    assert "\n" not in message and len(message) < 1500
    assert "and 297 more;" in message and "'evil\\nERROR: injected'" in message


def test_our_own_caches_are_still_recognised_reused_and_rebuilt(tmp_path):
    """A cache written by this code (or an earlier one: same index format) is reused; one built for
    another teacher is rebuilt, deleting only its own files; other files in it are kept."""
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    first = build_cache(folder, ITEMS, FakeTeacher(), progress=False)
    assert (first.computed, first.rebuilt) == (2, False)
    index = json.loads((folder / "index.json").read_text())
    assert index["format"] == CACHE_FORMAT
    again = build_cache(folder, ITEMS, FakeTeacher(), progress=False)
    assert (again.computed, again.reused) == (0, 2)
    other = build_cache(folder, ITEMS, FakeTeacher("0" * 64), progress=False)
    assert other.rebuilt and other.previous_fingerprint == "f" * 64 and other.computed == 2
    assert sorted(files_of(folder)) == ["index.json", "notes.txt", "shard-00000.safetensors"]


def test_a_new_cache_is_marked_before_its_first_shard(tmp_path):
    """The index (our marker) is written before any shard: a build killed in its first shard leaves
    a folder the next build recognises as its own."""

    class Dying(FakeTeacher):
        def vectors(self, seqs, names=None, batch_size=64):
            raise KeyboardInterrupt

    folder = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        build_cache(folder, ITEMS, Dying(), progress=False)
    assert json.loads((folder / "index.json").read_text())["format"] == CACHE_FORMAT
    (folder / ".tmp-shard-00000.safetensors").write_bytes(b"half")  # as a kill during save_file leaves it
    report = build_cache(folder, ITEMS, FakeTeacher(), progress=False)
    assert report.computed == 2 and sorted(files_of(folder)) == ["index.json", "shard-00000.safetensors"]


def test_cif_prepare_refuses_a_foreign_folder_in_one_line(tmp_path, capsys):
    from helpers.cif_asr_data import make_aishell_corpus, write_tiny_bert
    from recycle_distill.cli import main as cli_main

    corpus = make_aishell_corpus(tmp_path / "aishell", {"train": ["今天 好"]})
    bert = write_tiny_bert(tmp_path / "bert", ["今", "天", "好"])
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "index.json").write_text('{"name": "my site"}')
    (folder / "shard-00000.safetensors").write_bytes(b"mine")
    before = files_of(folder)
    code = cli_main(["cif-prepare", "--corpus", "aishell", "--root", str(corpus), "--splits", "train",
                     "--lm", str(bert), "--cache", str(folder)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {folder} is not a recycle-distill feature cache (its index.json has no 'format'")
    assert files_of(folder) == before


# ----------------------------------------------------------------------------- item 14 and 17: reading


def write_cache(folder, tensors=None, index_changes=None, entry_changes=None):
    """A one-shard float32 cache of hidden size 4 written by hand; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = tensors if tensors is not None else {"u": torch.zeros(3, 4)}
    save_file(tensors, str(folder / "shard-00000.safetensors"))
    entry = {"shard": "shard-00000.safetensors", "key": "u", "shape": [3, 4], "ids": "abc"}
    entry.update(entry_changes or {})
    index = {"format": CACHE_FORMAT, "fingerprint": "fp", "language": "en", "dtype": "float32",
             "hidden_size": 4, "shards": ["shard-00000.safetensors"], "entries": {"u": entry}}
    index.update(index_changes or {})
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def test_a_hand_written_cache_reads_back(tmp_path):
    cache = FeatureCache.open(write_cache(tmp_path / "c"), "fp")
    assert torch.equal(cache.get("u"), torch.zeros(3, 4))


@pytest.mark.parametrize("shard", ["/etc/passwd", "../outside.safetensors", "sub/shard-00000.safetensors",
                                   "index.json"])
def test_an_index_pointing_outside_the_cache_is_refused(tmp_path, shard):
    (tmp_path / "outside.safetensors").write_bytes(b"not yours")
    folder = write_cache(tmp_path / "c", entry_changes={"shard": shard})
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, "fp")
    assert str(error.value) == (
        f"feature cache {folder / 'index.json'}: entries['u'].shard must name one of the cache's shards "
        f"(shard-NNNNN.safetensors, listed in 'shards'), got {shard!r}; {DAMAGED}")


def test_a_shard_that_is_a_symlink_out_of_the_cache_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    save_file({"u": torch.zeros(3, 4)}, str(outside))
    folder = write_cache(tmp_path / "c")
    (folder / "shard-00000.safetensors").unlink()
    (folder / "shard-00000.safetensors").symlink_to(outside)
    cache = FeatureCache.open(folder, "fp")
    with pytest.raises(FeatureCacheError) as error:
        cache.get("u")
    assert str(error.value) == (f"feature cache {folder / 'shard-00000.safetensors'}: leads outside the cache "
                                f"folder (it resolves to {outside}); {DAMAGED}")


@pytest.mark.parametrize("tensor, problem", [
    (torch.full((3, 4), float("nan")), "hold NaN or infinite values"),
    (torch.tensor([[0.0, 1.0, float("inf"), 0.0]] * 3), "hold NaN or infinite values"),
    (torch.zeros(3, 5), "have shape (3, 5); the index records (3, 4) (hidden_size 4)"),
    (torch.zeros(12), "have shape (12,); the index records (3, 4) (hidden_size 4)"),
    (torch.zeros(3, 4, dtype=torch.int64), "have dtype int64; the cache holds float32"),
    (torch.zeros(3, 4, dtype=torch.float16), "have dtype float16; the cache holds float32"),
    (torch.zeros(4, 4), "have shape (4, 4); the index records (3, 4) (hidden_size 4)"),
])
def test_vectors_are_checked_before_they_are_returned(tmp_path, tensor, problem):
    folder = write_cache(tmp_path / "c", tensors={"u": tensor})
    cache = FeatureCache.open(folder, "fp")
    with pytest.raises(FeatureCacheError) as error:
        cache.get("u")
    assert str(error.value) == f"feature cache {folder / 'shard-00000.safetensors'}: vectors 'u' {problem}; {DAMAGED}"


def test_a_missing_key_or_unreadable_shard_is_one_line(tmp_path):
    folder = write_cache(tmp_path / "c", tensors={"other": torch.zeros(3, 4)})
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, "fp").get("u")
    assert str(error.value) == (f"feature cache {folder / 'shard-00000.safetensors'}: vectors 'u' are missing; "
                                f"{DAMAGED}")
    (folder / "shard-00000.safetensors").write_bytes(b"garbage")
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, "fp").get("u")
    message = str(error.value)
    assert message.startswith(f"feature cache {folder / 'shard-00000.safetensors'}: cannot be read (")
    assert message.endswith(DAMAGED) and "\n" not in message


@pytest.mark.parametrize("changes, key, problem", [
    ({"entries": [1, 2]}, "entries", "must be a mapping of utterance ids, got list"),
    ({"entries": {"u": "shard-00000"}}, "entries['u']", "must be a mapping, got str"),
    ({"hidden_size": None}, "hidden_size", "must be a whole number in [1, 65536], got None"),
    ({"hidden_size": 10 ** 30}, "hidden_size",
     "must be a whole number in [1, 65536], got 1000000000000000000000000000000"),
    ({"hidden_size": True}, "hidden_size", "must be a whole number in [1, 65536], got True"),
    ({"shards": "shard-00000.safetensors"}, "shards", "must be a list of shard file names, got str"),
    ({"shards": [LONG_SHARD]}, "shards[0]",
     f"must be a shard file name (shard-NNNNN.safetensors), got {short_repr(LONG_SHARD)}"),
    ({"dtype": "int64"}, "dtype", "must be one of float32, float16, bfloat16, got 'int64'"),
    ({"fingerprint": 12}, "fingerprint", "must be a string, got 12"),
    ({"language": ["en"]}, "language", "must be a string or null, got ['en']"),
])
def test_a_malformed_index_names_the_file_and_the_key(tmp_path, changes, key, problem):
    folder = write_cache(tmp_path / "c", index_changes=changes)
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, "fp")
    assert str(error.value) == f"feature cache {folder / 'index.json'}: {key} {problem}; {DAMAGED}"


@pytest.mark.parametrize("entry, key, problem", [
    ({"shape": [10 ** 30, 4]}, "entries['u'].shape",
     "must be [rows, hidden_size] with rows in [1, 1000000] and hidden_size 4, "
     "got [1000000000000000000000000000000, 4]"),
    ({"shape": [3, 4.5]}, "entries['u'].shape",
     "must be [rows, hidden_size] with rows in [1, 1000000] and hidden_size 4, got [3, 4.5]"),
    ({"shape": "3x4"}, "entries['u'].shape",
     "must be [rows, hidden_size] with rows in [1, 1000000] and hidden_size 4, got '3x4'"),
    ({"key": 7}, "entries['u'].key", "must be a string, got 7"),
    ({"ids": None}, "entries['u'].ids", "must be a string, got None"),
])
def test_a_malformed_entry_names_the_file_and_the_key(tmp_path, entry, key, problem):
    folder = write_cache(tmp_path / "c", entry_changes=entry)
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, "fp")
    assert str(error.value) == f"feature cache {folder / 'index.json'}: {key} {problem}; {DAMAGED}"


def test_a_missing_key_and_an_overflowing_number_are_one_line(tmp_path):
    folder = write_cache(tmp_path / "c")
    index = json.loads((folder / "index.json").read_text())
    del index["hidden_size"]
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, "fp")
    assert str(error.value) == f"feature cache {folder / 'index.json'}: hidden_size is missing; {DAMAGED}"
    (folder / "index.json").write_text(json.dumps(index)[:-1] + ', "hidden_size": 1e400}')
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, "fp")
    assert str(error.value) == (f"feature cache {folder / 'index.json'}: hidden_size must be a whole number in "
                                f"[1, 65536], got inf; {DAMAGED}")


def test_build_refuses_a_malformed_index_of_ours_without_deleting(tmp_path):
    folder = write_cache(tmp_path / "c", entry_changes={"shard": "../../x"})
    before = files_of(folder)
    with pytest.raises(FeatureCacheError) as error:
        build_cache(folder, ITEMS, FakeTeacher("fp"), progress=False)
    assert str(error.value).startswith(f"feature cache {folder / 'index.json'}: entries['u'].shard must name")
    assert files_of(folder) == before


def test_a_malformed_index_is_one_line_from_cif_asr_training_code_too(tmp_path):
    """The expert opens the cache with FeatureCache.open: the same one line, never a KeyError."""
    folder = write_cache(tmp_path / "c", index_changes={"entries": None})
    with pytest.raises(FeatureCacheError, match=r"entries must be a mapping of utterance ids, got NoneType"):
        FeatureCache.open(folder, "fp")
    assert os.path.isfile(folder / "index.json")


def test_build_refuses_to_reuse_a_shard_leading_out_of_the_cache(tmp_path):
    folder = tmp_path / "cache"
    build_cache(folder, ITEMS, FakeTeacher(), progress=False)
    outside = tmp_path / "elsewhere.safetensors"
    (folder / "shard-00000.safetensors").rename(outside)
    (folder / "shard-00000.safetensors").symlink_to(outside)
    before, outside_bytes = files_of(folder), outside.read_bytes()
    with pytest.raises(FeatureCacheError) as error:
        build_cache(folder, ITEMS + [("utt2", [5])], FakeTeacher(), progress=False)
    assert str(error.value) == (f"feature cache {folder / 'shard-00000.safetensors'}: leads outside the cache "
                                f"folder (it resolves to {outside}); {DAMAGED}")
    assert files_of(folder) == before and outside.read_bytes() == outside_bytes


@pytest.mark.parametrize("kind", ["fifo", "file"])
def test_a_cache_path_that_is_not_a_folder_is_refused(tmp_path, kind):
    target = tmp_path / "cache"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.write_text("mine")
    with pytest.raises(ValueError) as error:
        build_cache(target, ITEMS, FakeTeacher(), progress=False)
    what = "FIFO (named pipe)" if kind == "fifo" else "regular file"
    assert str(error.value) == f"{target}: is a {what}, not a folder; refusing to write over it"


def test_a_full_disk_keeps_the_cache_as_it_was(tmp_path, monkeypatch):
    """A shard or index write that fails leaves the folder byte for byte as it was, in one line."""
    import errno

    from recycle_distill.downstreams.cif_asr import feature_cache

    folder = tmp_path / "cache"
    build_cache(folder, ITEMS, FakeTeacher(), progress=False)
    before = files_of(folder)
    real_replace = os.replace

    def full(source, destination):
        if os.path.basename(destination) == "index.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(feature_cache.os, "replace", full)
    with pytest.raises(FeatureCacheError) as error:
        build_cache(folder, ITEMS + [("utt2", [5])], FakeTeacher(), progress=False)
    monkeypatch.undo()
    assert str(error.value) == (f"feature cache {folder}: could not write index.json (No space left on device); "
                                "the cache keeps the shards it had: run the same command again once the cause is "
                                "fixed")
    assert files_of(folder) == before
    assert build_cache(folder, ITEMS + [("utt2", [5])], FakeTeacher(), progress=False).computed == 1
