"""The cif_asr S3PRL expert in-process: its contract with S3PRL's runner, and bad input refused
before training (a unit the tokenizer splits or does not know, a missing transcript file, an
empty split, a feature cache of another tokenizer, an upstream rate the CIF cannot use)."""

from __future__ import annotations

import math
import shutil
from collections import defaultdict

import pytest
import torch

from recycle_distill.downstreams.cif_asr.corpus import CorpusError
from recycle_distill.downstreams.cif_asr.dataset import UnitError, prepare_split
from recycle_distill.downstreams.cif_asr.expert import DownstreamExpert
from recycle_distill.downstreams.cif_asr.feature_cache import FeatureCacheError, build_cache
from recycle_distill.downstreams.cif_asr.lm_teacher import LanguageModelTeacher
from recycle_distill.downstreams.cif_asr.model import CifFrameRateError

from helpers.cif_asr_data import make_aishell_corpus, make_librispeech_corpus, write_tiny_bert

WORDS = ["one", "two", "three", "four"]
TEXTS = {"train-clean-100": ["one two three", "four three two", "two two one"],
         "dev-clean": ["three one"], "test-clean": ["four four"]}
SMALL = {"d_model": 32, "conformer_ffn": 64, "conformer_heads": 2, "conformer_kernel": 3,
         "predictor_channels": 32, "decoder_ffn": 64, "decoder_heads": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cif_expert")
    return {"root": root, "english": make_librispeech_corpus(root / "LibriSpeech", TEXTS),
            "bert": write_tiny_bert(root / "bert", WORDS), "other_bert": write_tiny_bert(root / "bert2", WORDS + ["five"])}


def _section(corpus, **changes) -> dict:
    section = {"corpus": {"name": "librispeech", "root": str(corpus["english"]), "unit_error": "fail"},
               "lm": {"path": str(corpus["bert"])}, "data": {"batch_size": 2, "eval_batch_size": 2},
               "model": dict(SMALL), "loss": {"acd": 1.0, "lrd": 0.01}, "decode": {"beam_size": 2}}
    for key, value in changes.items():
        head, name = key.split("__")
        section[head][name] = value
    return section


class FakeLogger:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, global_step=None):
        self.scalars[tag] = value


def test_runner_contract(corpus, tmp_path):
    expert = DownstreamExpert(16, 320, _section(corpus), str(tmp_path / "exp"))
    assert not any("bert" in name.lower() for name, _ in expert.named_parameters())  # frozen LM outside the tree
    for split in ("train", "dev"):
        records = defaultdict(list)
        for wavs, *others in expert.get_dataloader(split):
            features = [torch.randn(len(w) // 320, 16) for w in wavs]
            loss = expert(split, features, *others, records=records)
            assert loss.dim() == 0 and torch.isfinite(loss)
            if split == "train":
                loss.backward()
        tb = FakeLogger()
        names = expert.log_records(split, records=records, logger=tb, global_step=3)
        for term in ("ce", "quantity", "ctc", "acd", "lrd", "acd_accuracy"):
            assert f"cif_asr/{split}-{term}" in tb.scalars
        if split == "dev":
            assert names == ["dev-best.ckpt"] and {"cif_asr/dev-cer", "cif_asr/dev-wer"} <= set(tb.scalars)
            assert math.isfinite(float(expert.best_error))
            assert (tmp_path / "exp" / "dev-hyp-3.txt").read_text().count("\tREF three one") == 1
    state = expert.state_dict()
    assert "unit_lm_ids" in state and not any(k.startswith("_teacher") for k in state)
    again = DownstreamExpert(16, 320, _section(corpus), str(tmp_path / "exp"))
    again.load_state_dict(state)


def test_unknown_unit_fails_or_is_skipped(corpus, tmp_path):
    texts = {**TEXTS, "train-clean-100": TEXTS["train-clean-100"] + ["one zebra"]}
    root = make_librispeech_corpus(tmp_path / "LibriSpeech", texts)
    with pytest.raises(UnitError, match=r"1 of 4 transcripts cannot be split.*unknown piece: 1"):
        DownstreamExpert(16, 320, _section(corpus, corpus__root=str(root)), str(tmp_path / "a"))
    expert = DownstreamExpert(16, 320, _section(corpus, corpus__root=str(root), corpus__unit_error="skip"),
                              str(tmp_path / "b"))
    assert len(expert.prepared["train"]) == 3 and expert.prepared["train"].dropped == 1


def test_mandarin_multi_character_piece_is_counted(tmp_path):
    bert = write_tiny_bert(tmp_path / "bert_zh", list("一二三") + ["ab"])
    root = make_aishell_corpus(tmp_path / "aishell", {"train": ["一二三", "三二ab"], "dev": ["一二"], "test": ["三"]})
    tokenizer = LanguageModelTeacher.from_dir(bert).tokenizer
    with pytest.raises(UnitError, match="multi-character piece: 1"):
        prepare_split("aishell", root, "train", tokenizer, unit_error="fail")
    assert len(prepare_split("aishell", root, "train", tokenizer, unit_error="skip")) == 1


def test_missing_transcript_file(corpus, tmp_path):
    root = tmp_path / "LibriSpeech"
    shutil.copytree(corpus["english"], root)
    transcript = next(root.glob("dev-clean/*/*/*.trans.txt"))
    transcript.unlink()
    with pytest.raises(CorpusError, match=str(transcript.parent)):
        DownstreamExpert(16, 320, _section(corpus, corpus__root=str(root)), str(tmp_path / "exp"))


def test_empty_split(corpus, tmp_path):
    root = tmp_path / "LibriSpeech"
    shutil.copytree(corpus["english"], root)
    (root / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty"):
        DownstreamExpert(16, 320, _section(corpus, corpus__root=str(root), corpus__test=["empty"]), str(tmp_path / "exp"))


def test_feature_cache_of_another_tokenizer_is_refused(corpus, tmp_path):
    other = LanguageModelTeacher.from_dir(corpus["other_bert"])
    items = []
    for subsets in (["train-clean-100"], ["dev-clean"], ["test-clean"]):
        items += prepare_split("librispeech", corpus["english"], subsets, other.tokenizer).lm_items()
    cache = tmp_path / "cache"
    build_cache(cache, items, other, progress=False)
    section = _section(corpus, lm__feature_cache=str(cache))
    with pytest.raises(FeatureCacheError, match="fingerprint.*re-run `recycle-distill cif-prepare`"):
        DownstreamExpert(16, 320, section, str(tmp_path / "exp"))


@pytest.mark.parametrize("rate, ok", [(320, True), (160, True), (640, True), (880, False), (16000, False)])
def test_upstream_frame_rate(corpus, tmp_path, rate, ok):
    if ok:
        DownstreamExpert(16, rate, _section(corpus), str(tmp_path / "exp"))
        return
    period = 1000 * rate / 16000
    with pytest.raises(CifFrameRateError, match=rf"frame period {period:g} ms .*cannot reach the CIF window 60-100 ms"):
        DownstreamExpert(16, rate, _section(corpus), str(tmp_path / "exp"))


def test_settings_errors_name_the_key(corpus, tmp_path):
    from recycle_distill.util.config_check import ConfigError

    with pytest.raises(ConfigError, match=r"downstream_expert.corpus.unit_eror: unknown key; did you mean 'unit_error'"):
        section = _section(corpus)
        section["corpus"]["unit_eror"] = "skip"
        DownstreamExpert(16, 320, section, str(tmp_path / "exp"))
    with pytest.raises(ConfigError, match="downstream_expert.lm.path"):
        DownstreamExpert(16, 320, _section(corpus, lm__path=""), str(tmp_path / "exp"))


def test_vocabulary_of_another_run_is_refused(corpus, tmp_path):
    DownstreamExpert(16, 320, _section(corpus), str(tmp_path / "exp"))
    texts = {**TEXTS, "train-clean-100": ["one two", "two one"]}
    root = make_librispeech_corpus(tmp_path / "LibriSpeech", texts)
    with pytest.raises(ValueError, match="another unit vocabulary"):
        DownstreamExpert(16, 320, _section(corpus, corpus__root=str(root)), str(tmp_path / "exp"))


def test_evaluate_reports_the_checkpoints_step_and_error_rates_in_percent(corpus, tmp_path, capsys):
    import argparse

    states = tmp_path / "states-6.ckpt"
    torch.save({"Args": argparse.Namespace(mode="train"), "Step": 6}, states)  # as S3PRL's runner saves it
    with torch.serialization.safe_globals([argparse.Namespace]):  # what the runner allow-lists before
        expert = DownstreamExpert(16, 320, _section(corpus), str(tmp_path / "exp"), mode="evaluate",
                                  init_ckpt=str(states))
    records = {"loss": [1.0], "ids": ["u1"], "hyp": ["four"], "ref": ["four four"]}
    tb = FakeLogger()
    expert.log_records("test", records=records, logger=tb, global_step=0)  # S3PRL's -m evaluate passes 0
    line = capsys.readouterr().out.strip()
    # One word of two missed: WER 50 %; four letters of eight: CER 50 % (S3PRL's asr prints percentages).
    assert line == "[cif_asr] test step 6: loss 1.0000 cer 50.0000 wer 50.0000"
    assert tb.scalars["cif_asr/test-wer"] == 50.0 and (tmp_path / "exp" / "test-hyp-6.txt").is_file()

    training = DownstreamExpert(16, 320, _section(corpus), str(tmp_path / "exp"), mode="train", init_ckpt=str(states))
    training.log_records("dev", records=dict(records), logger=FakeLogger(), global_step=8)
    assert capsys.readouterr().out.startswith("[cif_asr] dev step 8: ")
    assert float(training.best_error) == 0.5  # compared as a fraction, as checkpoints of earlier versions hold it
