"""The trainer's data pipeline: sources, cache, skipping, bucketing sampler, resume, collate."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

from recycle_distill.training.data import (
    AudioBatch,
    AudioDataset,
    AudioEntry,
    LengthBucketBatchSampler,
    ManifestError,
    ManifestNotFoundError,
    ResumableDataLoader,
    build_manifest,
    collate_audio,
    load_manifest,
    make_dataloader,
    manifest_from_data_config,
    padding_mask,
    write_tsv_manifest,
)
from recycle_distill.training.data import scan as scan_module
from recycle_distill.training.data.synth import make_len_for_bucket, make_tiny_librispeech

HAVE_ESPEAK = shutil.which("espeak-ng") is not None


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """6 speakers x 6 utterances of train-clean-100, 2 x 2 of dev-clean."""
    root = tmp_path_factory.mktemp("libri")
    train = make_tiny_librispeech(root, speakers=6, utterances_per_speaker=6, seed=1, subsets=("train-clean-100",))
    dev = make_tiny_librispeech(root, speakers=2, utterances_per_speaker=2, seed=2, subsets=("dev-clean",))
    return {"root": root, "train": train, "dev": dev}


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def write_wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = (0.1 * np.random.default_rng(0).standard_normal((int(seconds * rate), channels))).astype(np.float32)
    soundfile.write(str(path), samples if channels > 1 else samples[:, 0], rate, format=fmt)
    return path


class CountingHeaderReads:
    """Wraps scan._read_header to count header reads (a second, cached build makes none)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = scan_module._read_header

        def counted(path):
            self.calls += 1
            return original(path)

        monkeypatch.setattr(scan_module, "_read_header", counted)


# ---- synthetic corpus --------------------------------------------------------------------------


def test_tiny_corpus_layout(corpus):
    info, root = corpus["train"], corpus["root"]
    if HAVE_ESPEAK and os.environ.get("RECYCLE_DISTILL_NO_ESPEAK") != "1":
        assert info.corpus_source == "espeak-ng"
    else:
        assert info.corpus_source == "synthetic"
    assert info.num_utterances == 36 and len(info.speakers) == 6
    files = sorted((root / "train-clean-100").rglob("*.flac"))
    assert len(files) == 36
    for path in files[:6]:
        header = soundfile.info(str(path))
        assert (header.samplerate, header.channels) == (16000, 1)
        assert header.frames > 8000
        speaker, chapter, _ = path.stem.split("-")
        assert path.parent.name == chapter and path.parent.parent.name == speaker
        lines = (path.parent / f"{speaker}-{chapter}.trans.txt").read_text().splitlines()
        assert any(line.startswith(path.stem + " ") for line in lines)
    assert set(corpus["dev"].subsets) == {"dev-clean"}
    assert not set(corpus["dev"].speakers) & set(info.speakers)


def test_synthetic_fallback_is_loud(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        info = make_tiny_librispeech(tmp_path, speakers=2, utterances_per_speaker=1, use_espeak=False)
    assert info.corpus_source == "synthetic"
    assert any("espeak-ng NOT FOUND" in record.getMessage() for record in caplog.records)
    assert len(list(tmp_path.rglob("*.flac"))) == 2


# ---- sources -----------------------------------------------------------------------------------


def test_librispeech_source(corpus, cache_dir):
    manifest = build_manifest(corpus["root"], ["train-clean-100", "dev-clean"], cache_dir=cache_dir)
    assert manifest.kind == "librispeech" and len(manifest) == 40
    by_id = {entry.utterance_id: entry for entry in manifest}
    for uid, text in corpus["train"].transcripts.items():
        entry = by_id[uid]
        assert entry.transcript == text and entry.speaker == uid.split("-")[0]
        assert entry.num_samples == soundfile.info(entry.path).frames
        assert (entry.sample_rate, entry.channels) == (16000, 1)


def test_folder_source_all_formats(tmp_path, cache_dir):
    write_wav(tmp_path / "a" / "one.wav", 0.5)
    write_wav(tmp_path / "a" / "b" / "two.flac", 0.25)
    write_wav(tmp_path / "c" / "three.ogg", 0.3, fmt="OGG")
    (tmp_path / "notes.txt").write_text("not audio")
    manifest = build_manifest(tmp_path, cache_dir=cache_dir)
    assert manifest.kind == "folder"
    lengths = {Path(entry.path).name: entry.num_samples for entry in manifest}
    assert lengths["one.wav"] == 8000 and lengths["two.flac"] == 4000
    assert abs(lengths["three.ogg"] - 4800) < 100  # vorbis frame counts are approximate


def test_tsv_source_relative_and_absolute(tmp_path, corpus):
    first = write_wav(tmp_path / "audio" / "x.wav", 0.5)
    elsewhere = write_wav(tmp_path / "other" / "y.wav", 0.25)
    tsv = tmp_path / "train.tsv"
    tsv.write_text(f"{tmp_path / 'audio'}\nx.wav\t8000\n{elsewhere}\t4000\n")
    manifest = build_manifest(tsv)
    assert manifest.kind == "tsv"
    assert [(e.path, e.num_samples) for e in manifest] == [(str(first), 8000), (str(elsewhere), 4000)]
    # Round trip through the writer.
    written = write_tsv_manifest(manifest, tmp_path / "copy.tsv", root=tmp_path / "audio")
    assert [(e.path, e.num_samples) for e in load_manifest(written)] == [(e.path, e.num_samples) for e in manifest]


def test_len_for_bucket_source(corpus, tmp_path):
    root = corpus["root"]
    csvs = make_len_for_bucket(root, ["train-clean-100", "dev-clean"], tmp_path / "len_for_bucket")
    header = csvs[0].read_text().splitlines()[0]
    assert header == ",file_path,length,label"
    manifest = build_manifest(tmp_path / "len_for_bucket", ["train-clean-100"], root=root)
    assert manifest.kind == "len_for_bucket" and len(manifest) == 36
    lengths = [entry.num_samples for entry in manifest]
    assert lengths == sorted(lengths, reverse=True)  # S3PRL order: longest first
    for entry in manifest[:3]:
        assert soundfile.info(entry.path).frames == entry.num_samples
    single = load_manifest(csvs[1], root=root)
    assert len(single) == 4
    # The reference YAML data: section picks the CSVs when they exist.
    data = {"bucketing_path": str(tmp_path / "len_for_bucket"), "libri_root": str(root),
            "train_set": ["train-clean-100"], "test_set": ["dev-clean"]}
    assert manifest_from_data_config(data, "train").kind == "len_for_bucket"
    assert len(manifest_from_data_config(data, "test")) == 4


def test_data_config_falls_back_to_scanning(corpus, tmp_path, cache_dir):
    data = {"bucketing_path": str(tmp_path / "missing"), "libri_root": str(corpus["root"]),
            "train_set": ["train-clean-100"], "test_set": ["test-clean"]}
    manifest = manifest_from_data_config(data, "train", cache_dir=cache_dir)
    assert manifest.kind == "librispeech" and len(manifest) == 36
    with pytest.raises(ManifestNotFoundError, match="test-clean"):
        manifest_from_data_config(data, "test", cache_dir=cache_dir)


# ---- cache -------------------------------------------------------------------------------------


def test_cache_reused_then_invalidated(tmp_path, cache_dir, monkeypatch):
    folder = tmp_path / "audio"
    for number in range(3):
        write_wav(folder / f"{number}.wav", 0.1 * (number + 1))
    counter = CountingHeaderReads(monkeypatch)
    first = build_manifest(folder, cache_dir=cache_dir)
    assert not first.from_cache and counter.calls == 3
    second = build_manifest(folder, cache_dir=cache_dir)
    assert second.from_cache and counter.calls == 3, "an unchanged folder must not be rescanned"
    assert list(second) == list(first)
    # Rewriting a file (new size and mtime) invalidates the cache.
    time.sleep(0.01)
    write_wav(folder / "1.wav", 0.7)
    third = build_manifest(folder, cache_dir=cache_dir)
    assert not third.from_cache and counter.calls == 6
    assert {Path(e.path).name: e.num_samples for e in third}["1.wav"] == 11200
    # So does adding one; stale cache files of the source are removed.
    write_wav(folder / "3.wav", 0.1)
    assert len(build_manifest(folder, cache_dir=cache_dir)) == 4
    assert len(list(cache_dir.glob("*.tsv"))) == 1
    assert len(build_manifest(folder, cache_dir=cache_dir, use_cache=False)) == 4


def test_threaded_scan_with_progress_bar(tmp_path, cache_dir):
    for number in range(70):  # >= 64 files takes the thread-pool path
        write_wav(tmp_path / "many" / f"{number:03d}.wav", 0.01 + 0.001 * number)
    (tmp_path / "many" / "junk.wav").write_bytes(b"RIFF....garbage")
    manifest = build_manifest(tmp_path / "many", cache_dir=cache_dir, progress=True, num_threads=2)
    assert [e.num_samples for e in manifest] == [int((0.01 + 0.001 * n) * 16000) for n in range(70)]
    assert manifest.unreadable == [str(tmp_path / "many" / "junk.wav")]


# ---- errors ------------------------------------------------------------------------------------


def test_errors_before_training(corpus, tmp_path, cache_dir):
    root = corpus["root"]
    with pytest.raises(ManifestNotFoundError) as missing:
        build_manifest(root, ["train-clean-360"], cache_dir=cache_dir)
    assert "train-clean-360" in str(missing.value) and str(root / "train-clean-360") in str(missing.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio files.*empty"):
        build_manifest(tmp_path / "empty", cache_dir=cache_dir)
    (tmp_path / "empty.tsv").write_text(f"{tmp_path}\n")
    with pytest.raises(ManifestError, match="empty.tsv lists no audio"):
        load_manifest(tmp_path / "empty.tsv")
    with pytest.raises(ManifestNotFoundError, match="nowhere"):
        build_manifest(tmp_path / "nowhere", cache_dir=cache_dir)
    with pytest.raises(ManifestError, match="empty manifest"):
        AudioDataset([])


# ---- dataset: skipping bad files ---------------------------------------------------------------


@pytest.fixture
def dirty_entries(tmp_path):
    """Four good 16 kHz files, one corrupt .flac, one 8 kHz file (a TSV lists lengths unchecked)."""
    good = [write_wav(tmp_path / f"good{i}.wav", 0.2 + 0.1 * i) for i in range(4)]
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(os.urandom(2048))
    low = write_wav(tmp_path / "low.wav", 0.5, rate=8000)
    paths = good[:2] + [corrupt] + good[2:] + [low]
    return [AudioEntry(str(path), 4000) for path in paths], str(corrupt), str(low)


def test_skips_bad_files_once(dirty_entries, caplog):
    entries, corrupt, low = dirty_entries
    dataset = AudioDataset(entries)
    loader = DataLoader(dataset, batch_size=2, collate_fn=collate_audio)
    seen = []
    with caplog.at_level(logging.WARNING, logger="recycle_distill.training.data.dataset"):
        for _ in range(2):  # a second epoch must not warn again
            for batch in loader:
                seen.extend(batch.indices.tolist())
    assert dataset.skipped == 2
    assert dataset.skipped_files() == {corrupt: "unreadable", low: "wrong sample rate"}
    assert dataset.skip_summary() == {"unreadable": 1, "wrong sample rate": 1}
    assert sum(corrupt in r.getMessage() for r in caplog.records) == 1
    assert sum(low in r.getMessage() and "8000 Hz" in r.getMessage() for r in caplog.records) == 1
    assert sorted(seen) == [0, 0, 1, 1, 3, 3, 4, 4]


def test_skip_count_reaches_main_process_from_workers(dirty_entries):
    entries, _, _ = dirty_entries
    dataset = AudioDataset(entries)
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate_audio, num_workers=1)
    assert sum(len(batch) for batch in loader) == 4
    assert dataset.skipped == 2


def test_stereo_skipped_and_empty_batch_marker(tmp_path):
    stereo = write_wav(tmp_path / "stereo.wav", 0.2, channels=2)
    garbage = tmp_path / "bad.flac"
    garbage.write_bytes(b"\0" * 100)
    dataset = AudioDataset([AudioEntry(str(stereo), 3200), AudioEntry(str(garbage), 10)])
    batch = collate_audio([dataset[0], dataset[1]])
    assert batch.is_empty and batch.num_dropped == 2 and batch.waveforms.shape == (0, 0)
    assert dataset.skip_summary() == {"not mono": 1, "unreadable": 1}


def test_waveforms_and_crops(corpus, cache_dir):
    manifest = build_manifest(corpus["root"], ["train-clean-100"], cache_dir=cache_dir)
    whole = AudioDataset(manifest)
    wave, index = whole[5]
    assert index == 5 and wave.dtype == torch.float32 and wave.ndim == 1
    assert wave.shape[0] == manifest[5].num_samples
    crop = 4000
    train = AudioDataset(manifest, max_samples=crop, seed=3)
    assert max(train.lengths) == crop
    first = train[5][0]
    assert first.shape == (crop,)
    assert torch.equal(first, AudioDataset(manifest, max_samples=crop, seed=3)[5][0]), "seeded"
    offsets = set()
    for epoch in range(4):
        train.set_epoch(epoch)
        cropped = train[5][0].numpy()
        offsets.add(next(i for i in range(wave.shape[0] - crop + 1) if np.array_equal(wave.numpy()[i : i + crop], cropped)))
    assert len(offsets) > 1, "crops move between epochs"
    evaluation = AudioDataset(manifest, max_samples=crop, random_crop=False)
    assert torch.equal(evaluation[5][0], wave[:crop])


# ---- collate -----------------------------------------------------------------------------------


def test_collate_pads_and_masks():
    items = [(torch.ones(3), 7), None, (torch.full((5,), 2.0), 2)]
    batch = collate_audio(items)
    assert isinstance(batch, AudioBatch) and batch.num_dropped == 1
    assert batch.waveforms.shape == (2, 5) and batch.waveforms.dtype == torch.float32
    assert batch.lengths.tolist() == [3, 5] and batch.lengths.dtype == torch.long
    assert batch.indices.tolist() == [7, 2]
    assert batch.waveforms[0].tolist() == [1, 1, 1, 0, 0]
    assert batch.padding_mask().tolist() == [[False] * 3 + [True] * 2, [False] * 5]
    assert padding_mask(torch.tensor([1, 2]), 3).tolist() == [[False, True, True], [False, False, True]]
    assert collate_audio([None]).is_empty and not batch.is_empty


# ---- sampler -----------------------------------------------------------------------------------

LENGTHS = np.random.default_rng(0).integers(1000, 50000, size=203).tolist()


def all_batches(sampler):
    return [list(batch) for batch in sampler]


def test_sampler_covers_epoch_and_buckets():
    sampler = LengthBucketBatchSampler(LENGTHS, 8, seed=1, pool_batches=5)
    batches = all_batches(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert max(len(b) for b in batches) == 8 and len(sampler) == len(batches) == 26
    spread = np.mean([max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches])
    assert spread < 0.2 * (max(LENGTHS) - min(LENGTHS)), "batches should group similar lengths"
    budget = LengthBucketBatchSampler(LENGTHS, 8, max_batch_samples=120000, seed=1)
    for batch in budget:
        assert len(batch) == 1 or len(batch) * max(LENGTHS[i] for i in batch) <= 120000


def test_sampler_deterministic_per_seed_and_epoch():
    def plan(seed, epoch):
        sampler = LengthBucketBatchSampler(LENGTHS, 8, seed=seed)
        sampler.set_epoch(epoch)
        return all_batches(sampler)

    assert plan(1, 0) == plan(1, 0) and plan(1, 3) == plan(1, 3)
    assert plan(1, 0) != plan(1, 1) and plan(1, 0) != plan(2, 0)
    fixed = LengthBucketBatchSampler(LENGTHS, 8, shuffle=False)
    assert all_batches(fixed) == all_batches(fixed)


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_sampler_distributed_shares(replicas):
    reference = LengthBucketBatchSampler(LENGTHS, 8, seed=5)
    reference.set_epoch(2)
    global_batches = reference.global_batches()
    shares = []
    for rank in range(replicas):
        sampler = LengthBucketBatchSampler(LENGTHS, 8, seed=5, num_replicas=replicas, rank=rank)
        sampler.set_epoch(2)
        shares.append(all_batches(sampler))
    assert len({len(share) for share in shares}) == 1, "equal number of batches per rank"
    flat = [tuple(b) for share in shares for b in share]
    assert set(flat) == {tuple(b) for b in global_batches}
    repeats = len(flat) - len(global_batches)
    assert 0 <= repeats < replicas and len(set(flat)) == len(global_batches)
    # With an even split (drop_uneven) the shares are exactly disjoint.
    even = [all_batches(LengthBucketBatchSampler(LENGTHS, 8, seed=5, num_replicas=replicas, rank=r, drop_uneven=True))
            for r in range(replicas)]
    indices = [i for share in even for b in share for i in b]
    assert len(indices) == len(set(indices)) and len({len(s) for s in even}) == 1


def test_sampler_resumes_exactly():
    uninterrupted = LengthBucketBatchSampler(LENGTHS, 8, seed=9, num_replicas=2, rank=1)
    uninterrupted.set_epoch(4)
    expected = all_batches(uninterrupted)
    sampler = LengthBucketBatchSampler(LENGTHS, 8, seed=9, num_replicas=2, rank=1)
    sampler.set_epoch(4)
    iterator = iter(sampler)
    head = [next(iterator) for _ in range(5)]
    state = sampler.state_dict()
    assert state["epoch"] == 4 and state["consumed"] == 5
    restored = LengthBucketBatchSampler(LENGTHS, 8, seed=9, num_replicas=2, rank=1)
    restored.load_state_dict(state)
    restored.set_epoch(4)  # the trainer's loop re-selecting the epoch keeps the position
    assert head + all_batches(restored) == expected
    restored.set_epoch(5)
    assert len(all_batches(restored)) == len(restored), "the next epoch is whole"


def test_loader_resumes_exactly_with_worker(corpus, cache_dir):
    manifest = build_manifest(corpus["root"], ["train-clean-100"], cache_dir=cache_dir)

    def loader():
        dataset = AudioDataset(manifest, max_samples=8000, seed=4)
        return make_dataloader(dataset, batch_size=4, seed=4, num_workers=1)

    full = loader()
    full.set_epoch(1)
    expected = [batch.indices.tolist() for batch in full]
    first = loader()
    first.set_epoch(1)
    head = []
    for batch in first:
        head.append(batch.indices.tolist())
        if len(head) == 3:
            break
    state = first.state_dict()
    assert state["consumed"] == 3, "prefetched batches are not counted as consumed"
    second = loader()
    second.load_state_dict(state)
    second.set_epoch(1)
    tail = [batch.indices.tolist() for batch in second]
    assert head + tail == expected
    assert isinstance(second, ResumableDataLoader) and second.state_dict()["consumed"] == len(expected)
