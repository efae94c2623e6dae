"""CIF-HieraDist data side: units, vocabulary, corpora, language-model teacher, feature cache,
dataset/sampler and ``recycle-distill cif-prepare`` (rules: ``docs/cif.md``)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile
import torch

from helpers.cif_asr_data import make_aishell_corpus, make_librispeech_corpus, write_tiny_bert
from recycle_distill.cli import main as cli_main
from recycle_distill.downstreams.cif_asr.corpus import CorpusError, scan_aishell, scan_librispeech
from recycle_distill.downstreams.cif_asr.dataset import (
    CifAsrDataset,
    UnitError,
    collate,
    load_audio,
    make_dataloader,
    prepare_split,
)
from recycle_distill.downstreams.cif_asr.feature_cache import FeatureCache, FeatureCacheError, build_cache
from recycle_distill.downstreams.cif_asr.lm_teacher import LanguageModelTeacher, TeacherError
from recycle_distill.downstreams.cif_asr.sampler import DurationSortedBatchSampler
from recycle_distill.downstreams.cif_asr.text import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    UnitVocabulary,
    tokenizer_fingerprint,
    transcript_units,
)

EN_TOKENS = ["the", "cat", "##s", "sat", "on", "mat", "dog", "ran", "red"]
ZH_TOKENS = ["今", "天", "好", "我", "们", "说", "ab", "20", "##23"]
EN_TEXTS = {"train-clean-100": ["the cat sat", "the cats sat on the mat", "the dog ran", "a red mat"],
            "dev-clean": ["the red dog"]}
ZH_TEXTS = {"train": ["今天 好", "我们 说", "今天ab好", "我们 说 好"], "dev": ["你 好"]}


@pytest.fixture(scope="module")
def en_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("en_bert"), EN_TOKENS)


@pytest.fixture(scope="module")
def zh_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("zh_bert"), ZH_TOKENS, seed=1)


@pytest.fixture(scope="module")
def en_teacher(en_bert):
    return LanguageModelTeacher.from_dir(en_bert)


@pytest.fixture(scope="module")
def zh_teacher(zh_bert):
    return LanguageModelTeacher.from_dir(zh_bert)


@pytest.fixture(scope="module")
def libri(tmp_path_factory):
    return make_librispeech_corpus(tmp_path_factory.mktemp("libri"), EN_TEXTS)


@pytest.fixture(scope="module")
def aishell(tmp_path_factory):
    return make_aishell_corpus(tmp_path_factory.mktemp("aishell"), ZH_TEXTS)


def ids_of(tokenizer, pieces):
    return tokenizer.convert_tokens_to_ids(pieces)


# ----------------------------------------------------------------------------- units


def test_zh_units_are_characters_with_their_lm_ids(zh_teacher):
    split = transcript_units("今天 好", zh_teacher.tokenizer, "zh")
    assert split.units == ["今", "天", "好"]
    assert split.lm_ids == ids_of(zh_teacher.tokenizer, ["今", "天", "好"])
    assert split.problems == [] and split.ok


def test_zh_latin_word_digit_run_and_unknown_are_problems(zh_teacher):
    tokenizer = zh_teacher.tokenizer
    assert transcript_units("今天AB好", tokenizer, "zh").problems == ["multi-character piece: 'ab'"]
    assert transcript_units("今天2023", tokenizer, "zh").problems == [
        "multi-character piece: '20'", "multi-character piece: '##23'"]
    assert transcript_units("今天xyz好", tokenizer, "zh").problems == ["unknown piece: 'xyz'"]
    assert transcript_units("今你", tokenizer, "zh").problems == ["unknown piece: '你'"]


def test_zh_units_with_a_slow_tokenizer(zh_bert):
    from transformers import BertTokenizer

    slow = BertTokenizer.from_pretrained(str(zh_bert), local_files_only=True)
    assert transcript_units("今天 好", slow, "zh").units == ["今", "天", "好"]
    assert transcript_units("今天AB好", slow, "zh").problems == ["multi-character piece: 'ab'"]
    assert transcript_units("今天xyz好", slow, "zh").problems == ["unknown piece: '[UNK]'"]
    assert tokenizer_fingerprint(slow) == tokenizer_fingerprint(
        BertTokenizer.from_pretrained(str(zh_bert), local_files_only=True))


def test_en_units_are_wordpieces_and_unknown_is_a_problem(en_teacher):
    tokenizer = en_teacher.tokenizer
    split = transcript_units("THE CATS SAT", tokenizer, "en")
    assert split.units == ["the", "cat", "##s", "sat"]
    assert split.lm_ids == ids_of(tokenizer, ["the", "cat", "##s", "sat"])
    assert split.ok
    bad = transcript_units("THE BIRD SAT", tokenizer, "en")
    assert bad.units == ["the", "[UNK]", "sat"]
    assert bad.problems == ["unknown piece: 'BIRD'"]


def test_unknown_language_is_refused(en_teacher):
    with pytest.raises(ValueError, match="language must be one of zh, en, got 'fr'"):
        transcript_units("x", en_teacher.tokenizer, "fr")


# ----------------------------------------------------------------------------- vocabulary


def test_vocabulary_order_encode_decode_and_words(en_teacher):
    tokenizer = en_teacher.tokenizer
    splits = [transcript_units(text, tokenizer, "en") for text in ("THE CATS SAT", "THE DOG", "THE BIRD")]
    vocab = UnitVocabulary.build(splits, tokenizer, "en")
    # Specials first, then the units seen in usable transcripts in language-model id order.
    assert vocab.units == list(SPECIALS) + ["the", "cat", "##s", "sat", "dog"]
    assert vocab.lm_ids[BOS] == tokenizer.cls_token_id and vocab.lm_ids[EOS] == tokenizer.sep_token_id
    assert vocab.lm_ids[PAD] == tokenizer.pad_token_id and vocab.lm_ids[UNK] == tokenizer.unk_token_id
    assert vocab.lm_ids[5:] == ids_of(tokenizer, ["the", "cat", "##s", "sat", "dog"])
    assert vocab.encode(["the", "cat", "##s", "ran"]) == [5, 6, 7, UNK]
    assert vocab.unknown_count == 1
    assert vocab.decode([BOS, 5, 6, 7, 8, EOS, PAD]) == ["the", "cat", "##s", "sat"]
    assert vocab.words(["the", "cat", "##s", "sat"]) == ["the", "cats", "sat"]
    assert vocab.text(["the", "cat", "##s", "sat"]) == "the cats sat"
    assert vocab.words(["我", "们"], "zh") == ["我", "们"] and vocab.text(["我", "##们"], "zh") == "我们"


def test_vocabulary_save_load_round_trip(tmp_path, en_teacher, zh_teacher):
    splits = [transcript_units("THE CATS SAT", en_teacher.tokenizer, "en")]
    vocab = UnitVocabulary.build(splits, en_teacher.tokenizer, "en")
    path = vocab.save(tmp_path)
    assert path == tmp_path / "vocab.json"
    loaded = UnitVocabulary.load(path)
    assert loaded == vocab and loaded.encode(["cat"]) == [6]
    assert json.loads(path.read_text())["fingerprint"] == tokenizer_fingerprint(en_teacher.tokenizer)
    other = UnitVocabulary.build([transcript_units("今天", zh_teacher.tokenizer, "zh")], zh_teacher.tokenizer, "zh")
    assert other != vocab and other.fingerprint != vocab.fingerprint
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="bad.json: not a CIF unit vocabulary"):
        UnitVocabulary.load(tmp_path / "bad.json")


# ----------------------------------------------------------------------------- corpora


def test_scan_librispeech_layout(libri):
    train = scan_librispeech(libri, "train-clean-100")
    assert [u.id for u in train] == ["100-1000-0000", "101-1010-0001", "102-1020-0002", "103-1030-0003"]
    assert [u.text for u in train] == [text.upper() for text in EN_TEXTS["train-clean-100"]]
    assert train[1].speaker == "101" and train[1].path == libri / "train-clean-100/101/1010/101-1010-0001.flac"
    both = scan_librispeech(libri, ["train-clean-100", "dev-clean"])
    assert len(both) == 5 and [u.id for u in both] == sorted(u.id for u in both)


def test_scan_librispeech_errors_name_the_path(tmp_path, libri):
    with pytest.raises(CorpusError, match=f"LibriSpeech root {tmp_path / 'nope'} is not a folder"):
        scan_librispeech(tmp_path / "nope", ["train-clean-100"])
    with pytest.raises(CorpusError, match=f"LibriSpeech subset folder {libri / 'test-other'} does not exist"):
        scan_librispeech(libri, ["test-other"])
    (tmp_path / "test-clean").mkdir()
    with pytest.raises(CorpusError, match=f"LibriSpeech subset {tmp_path / 'test-clean'} has no utterances"):
        scan_librispeech(tmp_path, "test-clean")
    broken = make_librispeech_corpus(tmp_path / "broken", {"dev-clean": ["the cat"]})
    transcript = broken / "dev-clean/100/1000/100-1000.trans.txt"
    transcript.unlink()
    with pytest.raises(CorpusError, match=f"transcript file {transcript} is missing"):
        scan_librispeech(broken, "dev-clean")


def test_scan_aishell_layout_skips_untranscribed(aishell, caplog):
    extra = aishell / "wav/train/S0002/BAC009S0002W0999.wav"
    soundfile.write(str(extra), np.zeros(1600, dtype=np.float32), 16000)
    try:
        with caplog.at_level(logging.INFO):
            train = scan_aishell(aishell, "train")
    finally:
        extra.unlink()
    assert [u.id for u in train] == ["BAC009S0002W0001", "BAC009S0002W0003", "BAC009S0003W0002", "BAC009S0003W0004"]
    assert [u.text for u in train] == ["今天 好", "今天ab好", "我们 说", "我们 说 好"]
    assert train[0].speaker == "S0002" and train[0].path == aishell / "wav/train/S0002/BAC009S0002W0001.wav"
    assert "skipped 1 wav files without a transcript line" in caplog.text
    assert [u.id for u in scan_aishell(aishell, "dev")] == ["BAC009S0102W0001"]


def test_scan_aishell_errors_name_the_path(tmp_path, aishell):
    with pytest.raises(CorpusError, match=f"AISHELL-1 transcript file {tmp_path / 'transcript/aishell_transcript_v0.8.txt'} is missing"):
        scan_aishell(tmp_path, "train")
    with pytest.raises(CorpusError, match=f"AISHELL-1 split folder {aishell / 'wav/test'} does not exist"):
        scan_aishell(aishell, "test")
    (aishell / "wav/test/S0900").mkdir(parents=True)
    try:
        with pytest.raises(CorpusError, match=f"AISHELL-1 split {aishell / 'wav/test'} has no transcribed utterances"):
            scan_aishell(aishell, "test")
    finally:
        (aishell / "wav/test/S0900").rmdir()
        (aishell / "wav/test").rmdir()
    with pytest.raises(CorpusError, match="split must be one of train, dev, test, got 'eval'"):
        scan_aishell(aishell, "eval")


# ----------------------------------------------------------------------------- prepare_split


def test_prepare_split_fail_and_skip(aishell, zh_teacher, caplog):
    tokenizer = zh_teacher.tokenizer
    with pytest.raises(UnitError, match=r"aishell train: 1 of 4 transcripts cannot be split into language-model "
                                        r"units: multi-character piece: 1 \(e.g. BAC009S0002W0003 \('ab'\)\)"):
        prepare_split("aishell", aishell, "train", tokenizer, unit_error="fail")
    with caplog.at_level(logging.WARNING):
        prepared = prepare_split("aishell", aishell, "train", tokenizer, unit_error="skip")
    assert [item.id for item in prepared.items] == ["BAC009S0002W0001", "BAC009S0003W0002", "BAC009S0003W0004"]
    assert prepared.dropped == 1 and prepared.problem_counts == {"multi-character piece": 1}
    assert prepared.language == "zh" and "skipping 1 of 4 utterances" in caplog.text
    with pytest.raises(UnitError, match="aishell dev: no utterance left after skipping 1 with unit problems"):
        prepare_split("aishell", aishell, "dev", tokenizer, unit_error="skip")
    short = prepare_split("aishell", aishell, "train", tokenizer, unit_error="skip", max_tokens=3)
    assert [item.id for item in short.items] == ["BAC009S0002W0001", "BAC009S0003W0002"]
    assert short.problem_counts == {"longer than the language model": 2, "multi-character piece": 1}


# ----------------------------------------------------------------------------- teacher


def test_teacher_vectors_drop_cls_and_match_the_model(en_teacher):
    model, tokenizer = en_teacher.model, en_teacher.tokenizer
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    sequences = [ids_of(tokenizer, ["the", "cat", "##s", "sat"]), ids_of(tokenizer, ["dog"])]
    vectors = en_teacher.vectors(sequences)
    assert [tuple(v.shape) for v in vectors] == [(5, 32), (2, 32)]
    for ids, got in zip(sequences, vectors):
        full = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([full])).last_hidden_state[0]
        torch.testing.assert_close(got, expected[1:], atol=1e-5, rtol=1e-5)
        assert not got.is_inference() and not got.requires_grad


def test_teacher_errors(tmp_path, en_teacher):
    with pytest.raises(TeacherError, match=f"language-model folder {tmp_path / 'none'} does not exist"):
        LanguageModelTeacher.from_dir(tmp_path / "none")
    with pytest.raises(TeacherError, match=f"{tmp_path} is not a Hugging Face model folder"):
        LanguageModelTeacher.from_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TeacherError, match=f"cannot load a Hugging Face model from {tmp_path}"):
        LanguageModelTeacher.from_dir(tmp_path)
    with pytest.raises(TeacherError, match=r"utt-7: 63 tokens, but the language model .* takes at most 62"):
        en_teacher.vectors([[5] * 63], names=["utt-7"])


def test_teacher_without_transformers_says_how_to_install(en_bert, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    with pytest.raises(TeacherError, match=r"needs Hugging Face transformers: pip install 'recycle-distill\[hf\]'"):
        LanguageModelTeacher.from_dir(en_bert)


def test_teacher_fingerprint_is_stable_and_sees_the_tokenizer(tmp_path, en_bert, en_teacher):
    assert LanguageModelTeacher.from_dir(en_bert).fingerprint == en_teacher.fingerprint
    other = write_tiny_bert(tmp_path / "other", EN_TOKENS + ["mouse"])
    assert LanguageModelTeacher.from_dir(other).fingerprint != en_teacher.fingerprint


# ----------------------------------------------------------------------------- feature cache


class InterruptedTeacher:
    """Delegates to a teacher; raises KeyboardInterrupt on the ``fail_at``-th ``vectors`` call."""

    def __init__(self, teacher, fail_at=None):
        self.teacher, self.fail_at, self.calls, self.sequences = teacher, fail_at, 0, 0
        self.fingerprint, self.hidden_size = teacher.fingerprint, teacher.hidden_size

    def vectors(self, seqs, names=None, batch_size=64):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.sequences += len(seqs)
        return self.teacher.vectors(seqs, names=names, batch_size=batch_size)


def cache_items(n=7):
    return [(f"utt{i}", [5 + (i % 5), 6 + (i % 3)][: 1 + i % 2]) for i in range(n)]


def test_cache_build_open_get(tmp_path, en_teacher):
    items = cache_items()
    report = build_cache(tmp_path / "cache", items, en_teacher, shard_size=3, batch_size=2, language="en",
                         progress=False)
    assert (report.computed, report.reused, report.shards_written, report.rebuilt) == (7, 0, 3, False)
    cache = FeatureCache.open(tmp_path / "cache", en_teacher.fingerprint)
    assert len(cache) == 7 and cache.language == "en" and cache.hidden_size == 32
    for (utt_id, ids), expected in zip(items, en_teacher.vectors([ids for _, ids in items])):
        torch.testing.assert_close(cache.get(utt_id), expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(FeatureCacheError, match=f"utterance nope is not in the feature cache {tmp_path / 'cache'}"):
        cache.get("nope")
    with pytest.raises(FeatureCacheError, match=r"1 utterances missing \(e.g. nope\); 1 with other transcripts"):
        cache.check([("nope", [5]), ("utt0", [9, 9])])
    again = build_cache(tmp_path / "cache", items, en_teacher, shard_size=3, progress=False)
    assert (again.computed, again.reused) == (0, 7)


def test_cache_resumes_after_interruption(tmp_path, en_teacher):
    folder = tmp_path / "cache"
    items = cache_items()
    with pytest.raises(KeyboardInterrupt):  # dies in the second shard (batches of 2, shards of 3)
        build_cache(folder, items, InterruptedTeacher(en_teacher, fail_at=4), shard_size=3, batch_size=2,
                    progress=False)
    index = json.loads((folder / "index.json").read_text())
    assert index["shards"] == ["shard-00000.safetensors"] and sorted(index["entries"]) == ["utt0", "utt1", "utt2"]
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "shard-00000.safetensors"]
    # A shard renamed into place just before the kill but not yet in the index is recomputed.
    (folder / "shard-00001.safetensors").write_bytes(b"half a shard")
    counting = InterruptedTeacher(en_teacher)
    report = build_cache(folder, items, counting, shard_size=3, batch_size=2, progress=False)
    assert (report.computed, report.reused, counting.sequences) == (4, 3, 4)
    cache = FeatureCache.open(folder, en_teacher.fingerprint)
    torch.testing.assert_close(cache.get("utt5"), en_teacher.vectors([items[5][1]])[0], atol=1e-6, rtol=1e-6)


def test_cache_of_another_tokenizer_is_refused_and_rebuilt(tmp_path, en_teacher):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    build_cache(folder, cache_items(), en_teacher, shard_size=3, progress=False)
    other = LanguageModelTeacher.from_dir(write_tiny_bert(tmp_path / "other", EN_TOKENS + ["mouse"]))
    with pytest.raises(FeatureCacheError) as error:
        FeatureCache.open(folder, other.fingerprint)
    assert str(error.value) == (
        f"feature cache {folder} was built with tokenizer/model fingerprint {en_teacher.fingerprint} but the "
        f"language model has {other.fingerprint}; re-run `recycle-distill cif-prepare` with this model to rebuild it")
    report = build_cache(folder, cache_items(4), other, shard_size=3, progress=False)
    assert report.rebuilt and report.previous_fingerprint == en_teacher.fingerprint
    assert (report.computed, report.reused) == (4, 0)
    assert sorted(p.name for p in folder.iterdir()) == [
        "index.json", "notes.txt", "shard-00000.safetensors", "shard-00001.safetensors"]
    cache = FeatureCache.open(folder, other.fingerprint)
    assert cache.ids == ["utt0", "utt1", "utt2", "utt3"]
    torch.testing.assert_close(cache.get("utt1"), other.vectors([cache_items()[1][1]])[0], atol=1e-6, rtol=1e-6)
    with pytest.raises(FeatureCacheError, match=f"no feature cache in {tmp_path} "):
        FeatureCache.open(tmp_path, other.fingerprint)


# ----------------------------------------------------------------------------- dataset and loader


def test_dataset_items_and_collate_with_cache(tmp_path, libri, en_teacher):
    prepared = prepare_split("librispeech", libri, "train-clean-100", en_teacher.tokenizer, unit_error="skip")
    assert [item.units.units for item in prepared.items] == [
        ["the", "cat", "sat"], ["the", "cat", "##s", "sat", "on", "the", "mat"], ["the", "dog", "ran"]]
    vocab = UnitVocabulary.build(prepared.unit_splits, en_teacher.tokenizer, "en")
    build_cache(tmp_path / "cache", prepared.lm_items(), en_teacher, progress=False)
    cache = FeatureCache.open(tmp_path / "cache", en_teacher.fingerprint)
    dataset = CifAsrDataset(prepared, vocab, cache)
    wav, utt_id, target, lm_ids, teacher = dataset[0]
    assert wav.dtype == torch.float32 and wav.dim() == 1 and wav.numel() > 1600
    assert utt_id == "100-1000-0000" and lm_ids == prepared.items[0].units.lm_ids
    assert target.tolist() == vocab.encode(["the", "cat", "sat"]) and target.dtype == torch.long
    assert teacher.shape == (4, 32)
    wavs, ids, targets, lms, teachers = collate([dataset[0], dataset[2]])
    assert ids == ["100-1000-0000", "102-1020-0002"] and len(wavs) == 2 and len(targets) == 2
    assert [t.shape[0] for t in teachers] == [4, 4] and lms[1] == prepared.items[2].units.lm_ids
    assert collate([(wav, "a", target, lm_ids, None)])[4] is None
    loader = make_dataloader(CifAsrDataset(prepared, vocab), batch_size=2, seed=3, epoch=5)
    position = {item.id: number for number, item in enumerate(prepared.items)}
    epoch5 = [[position[utt] for utt in batch[1]] for batch in loader]
    assert sorted(sum(epoch5, [])) == [0, 1, 2] and epoch5 == loader.batch_sampler.batches(5)
    assert [[position[utt] for utt in batch[1]] for batch in loader] == loader.batch_sampler.batches(6)
    cached = make_dataloader(dataset, batch_size=3, shuffle=False, num_workers=1)
    assert [t.shape[0] for batch in cached for t in batch[4]] == [4, 4, 8]
    with pytest.raises(FeatureCacheError, match="1 utterances missing"):
        dev = prepare_split("librispeech", libri, "dev-clean", en_teacher.tokenizer)
        CifAsrDataset(dev, vocab, cache)


def test_load_audio_resamples_and_mixes_down(tmp_path):
    stereo = np.stack([np.ones(8000, np.float32) * 0.5, np.zeros(8000, np.float32)], axis=1)
    soundfile.write(str(tmp_path / "a.wav"), stereo, 8000, subtype="FLOAT")
    wav = load_audio(tmp_path / "a.wav")
    assert wav.shape == (16000,) and wav.dtype == torch.float32
    assert abs(float(wav[4000:12000].mean()) - 0.25) < 1e-3


def test_length_bucket_sampler():
    durations = [1.0, 5.0, 2.0, 2.0, 8.0, 1.5, 3.0, 2.5, 9.5]
    sampler = DurationSortedBatchSampler(durations, batch_size=3, max_seconds=10.0, seed=1)
    first, second = sampler.batches(0), sampler.batches(1)
    for batches in (first, second):
        assert sorted(i for batch in batches for i in batch) == list(range(9))
        assert all(len(b) <= 3 and (len(b) == 1 or sum(durations[i] for i in b) <= 10.0) for b in batches)
    assert first == DurationSortedBatchSampler(durations, 3, max_seconds=10.0, seed=1).batches(0)
    assert first != second
    assert list(iter(sampler)) == first and list(iter(sampler)) == second  # epochs advance by themselves
    plain = DurationSortedBatchSampler(durations, batch_size=4, shuffle=False)
    assert plain.batches(0) == [[0, 5, 2, 3], [7, 6, 1, 4], [8]]
    assert DurationSortedBatchSampler(durations, 4, shuffle=False, drop_last=True).batches(0) == [[0, 5, 2, 3], [7, 6, 1, 4]]


# ----------------------------------------------------------------------------- cif-prepare


def test_cif_prepare_cli(tmp_path, aishell, zh_bert, zh_teacher, capsys):
    cache = tmp_path / "cache"
    args = ["cif-prepare", "--corpus", "aishell", "--root", str(aishell), "--splits", "train",
            "--lm", str(zh_bert), "--cache", str(cache)]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "aishell train: 3 utterances, 1 skipped (multi-character piece 1)" in out
    assert f"cache {cache}: 3 computed, 0 reused, 1 new shards" in out
    assert FeatureCache.open(cache, zh_teacher.fingerprint).ids == [
        "BAC009S0002W0001", "BAC009S0003W0002", "BAC009S0003W0004"]
    assert cli_main(args + ["--splits", "train", "dev", "--unit-error", "fail"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: aishell train: 1 of 4 transcripts cannot be split")
    assert cli_main(args[:4] + [str(tmp_path / "missing")] + args[5:]) == 1
    assert capsys.readouterr().err == f"error: AISHELL-1 root {tmp_path / 'missing'} is not a folder\n"
    assert cli_main(args[:8] + [str(tmp_path / "no_lm")] + args[9:]) == 1
    assert capsys.readouterr().err == f"error: language-model folder {tmp_path / 'no_lm'} does not exist\n"
