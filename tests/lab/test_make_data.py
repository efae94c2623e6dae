"""`recycle-distill make-data`: tiny espeak-ng corpora in the real layouts, read back by the
readers that use them (S3PRL's datasets, the cif_asr corpus scanners and tokenizers)."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
import soundfile

from recycle_distill.cli import main as cli_main
from recycle_distill.lab.make_data import CORPORA, MARKER, MakeDataError, make_data
from recycle_distill.lab.make_data.superb import speech_commands_split
from recycle_distill.lab.smoke.child import _stand_in_catalyst
from recycle_distill.s3prl.compat import apply_compat
from recycle_distill.training.data.synth import espeak_available
from recycle_distill.util.atomic import OutputError

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="make-data needs espeak-ng")
# Everything but the BERT folders (transformers takes seconds to import); those: the slow test below.
FAST_CORPORA = ["librispeech", "speech_commands", "voxceleb1", "aishell"]
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")  # Speech Commands v1's ten


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    if not espeak_available():
        pytest.skip("make-data needs espeak-ng")
    out = tmp_path_factory.mktemp("make_data") / "tiny"
    manifest = make_data(out, corpora=FAST_CORPORA)
    return out, manifest


def _s3prl(module: str):
    apply_compat()
    _stand_in_catalyst()  # the Speech Commands expert imports catalyst at module level
    import importlib

    return importlib.import_module(module)


def test_without_espeak_it_says_how_to_install_it_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECYCLE_DISTILL_NO_ESPEAK", "1")
    assert cli_main(["make-data", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "espeak-ng" in err and "apt install espeak-ng" in err
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_ours_is_refused_and_untouched(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli_main(["make-data", str(tmp_path / "mine")]) == 1
    err = capsys.readouterr().err
    assert "not a make-data folder" in err and MARKER in err and "notes.txt" in err
    assert sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_an_unknown_corpus_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(MakeDataError, match="unknown corpus 'timit'; choose from librispeech, speech_commands"):
        make_data(tmp_path / "out", corpora=["timit"])
    assert not (tmp_path / "out").exists()


@needs_espeak
def test_the_marker_lists_what_was_written(data):
    out, manifest = data
    assert json.loads((out / MARKER).read_text()) == manifest
    assert manifest["recycle_distill"]["kind"] == "make-data" and list(manifest["corpora"]) == FAST_CORPORA
    expected = {MARKER, "LibriSpeech", "len_for_bucket", "speech_commands", "VoxCeleb1", "aishell"}
    assert set(os.listdir(out)) == expected  # no temporary folder left beside or inside
    assert not [name for name in os.listdir(out.parent) if name.startswith(".")]


@needs_espeak
def test_len_for_bucket_is_what_s3prl_asr_reads(data):
    out, _ = data
    dataset_module = _s3prl("s3prl.downstream.asr.dataset")
    dictionary = _s3prl("s3prl.downstream.asr.dictionary").Dictionary.load(str(out / "len_for_bucket" / "char.dict"))
    for subset in ("train-clean-100", "dev-clean", "test-clean"):
        with open(out / "len_for_bucket" / f"{subset}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows
        for row in rows:  # relative paths, lengths in samples as S3PRL's own script writes them
            assert not os.path.isabs(row["file_path"])
            assert int(row["length"]) == soundfile.info(str(out / "LibriSpeech" / row["file_path"])).frames
        dataset = dataset_module.SequenceDataset("train", 1, dictionary, str(out / "LibriSpeech"),
                                                 str(out / "len_for_bucket"), train=[subset])
        assert len(dataset.X) == len(rows) and len(dataset.Y) == len(rows)  # every file has its transcript


@needs_espeak
def test_speech_commands_splits_as_s3prl_splits_it(data):
    out, manifest = data
    expert = _s3prl("s3prl.downstream.speech_commands.expert")
    dataset = _s3prl("s3prl.downstream.speech_commands.dataset")
    train, dev = expert.split_dataset(out / "speech_commands" / "train")
    # Every keyword in train and dev, each speaker in one split only.
    for split in (train, dev):
        assert set(KEYWORDS) <= {word for word, _ in split}
    speakers = [{path.name.split("_nohash_")[0] for _, path in split} for split in (train, dev)]
    assert speakers[0] and speakers[1] and not speakers[0] & speakers[1]
    assert all(speech_commands_split(path.name) == "dev" for _, path in dev)
    counts = manifest["corpora"]["speech_commands"]["clips"]
    assert len(train) == sum(n for label, n in counts["train"].items() if label != "_silence_")
    # Background clips are longer than the 1 s S3PRL cuts from them; test classes are S3PRL's.
    noise = list((out / "speech_commands" / "train" / "_background_noise_").glob("*.wav"))
    assert len(noise) == 2 and all(soundfile.info(str(path)).frames > 16000 for path in noise)
    test = dataset.SpeechCommandsTestingDataset(speech_commands_test_root=out / "speech_commands" / "test")
    assert {name for name, _ in test.data} == set(KEYWORDS) | {"_unknown_", "_silence_"}
    assert all(soundfile.info(str(path)).frames == 16000 for _, path in test.data)


@needs_espeak
def test_voxceleb1_lists_name_files_that_exist(data):
    out, _ = data
    lines = (out / "VoxCeleb1" / "iden_split.txt").read_text().split("\n")[:-1]
    by_speaker: dict[str, set] = {}
    for line in lines:
        split, rel = line.split(" ")
        folder = "test" if split == "3" else "dev"
        assert soundfile.info(str(out / "VoxCeleb1" / folder / "wav" / rel)).samplerate == 16000
        by_speaker.setdefault(rel.split("/")[0], set()).add(split)
    assert len(by_speaker) == 2 and all(splits == {"1", "2", "3"} for splits in by_speaker.values())


@needs_espeak
@pytest.mark.slow
def test_the_bert_folders_cover_every_transcript_unit(tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from recycle_distill.downstreams.cif_asr.dataset import prepare_split

    out = tmp_path / "tiny"
    assert list(make_data(out, corpora=["librispeech", "aishell", "bert"])["corpora"]) == ["librispeech", "aishell", "bert"]
    assert set(CORPORA) == {*FAST_CORPORA, "bert"}
    for corpus, root, splits, bert in (("librispeech", out / "LibriSpeech", ["train-clean-100", "dev-clean"], "bert-en"),
                                       ("aishell", out / "aishell", ["train", "dev", "test"], "bert-zh")):
        tokenizer = AutoTokenizer.from_pretrained(str(out / bert))
        for split in splits:
            prepared = prepare_split(corpus, root, split, tokenizer, unit_error="fail")  # raises on any unknown unit
            assert len(prepared) >= 2 and prepared.dropped == 0


@needs_espeak
def test_an_earlier_folder_is_replaced_whole_and_one_with_user_files_is_refused(data, tmp_path, capsys):
    out, _ = data
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert cli_main(["make-data", str(copy), "--only", "voxceleb1"]) == 0
    assert "VoxCeleb1 -> file_path (SID)" in capsys.readouterr().out
    assert sorted(os.listdir(copy)) == sorted([MARKER, "VoxCeleb1"])
    assert list(json.loads((copy / MARKER).read_text())["corpora"]) == ["voxceleb1"]

    (copy / "my_results").mkdir()
    with pytest.raises(OutputError, match="holds entries that make-data does not write \\(my_results\\)"):
        make_data(copy, corpora=["voxceleb1"])
    assert (copy / "my_results").is_dir() and (copy / "VoxCeleb1" / "iden_split.txt").is_file()
