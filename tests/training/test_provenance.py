"""A trained student records where it came from (issue 23 item 8): teacher (kind, file name,
sha256), data (folders, hours), objective, steps and precision, in its checkpoint metadata, in
every ``export`` output, and in the Hugging Face model card."""

from __future__ import annotations

import hashlib
import json
import pathlib

import pytest
import soundfile
from safetensors.torch import load_file, save_file

from recycle_distill.checkpoint import CheckpointError, read_provenance, save_compact
from recycle_distill.cli import main
from recycle_distill.hf_export.model_card import model_card
from recycle_distill.training import load_train_config
from recycle_distill.training.trainer import Trainer

from conftest import load_fixture
from helpers.train_helpers import TEACHER, synthetic_train_corpus, tiny_config

RECORD = {
    "teacher": {"kind": "hubert", "name": "hubert_base_ls960.pt", "sha256": "ab" * 32},
    "data": {"folders": ["/db/LibriSpeech/train-clean-100"], "hours": 100.59, "utterances": 28539},
    "objective": "masking", "steps": 1234, "precision": "bf16", "trainer": "recycle-distill 0.1.0",
}


@pytest.fixture
def trained_file(tmp_path):
    """A compact student carrying RECORD (as the trainer writes it)."""
    fixture = load_fixture("golden_tiny_armhubert.pt")
    path = tmp_path / "student.safetensors"
    save_compact(str(path), fixture["state_dict"], "armhubert", fixture["config"], provenance=RECORD)
    return path


def test_the_record_reads_back_and_a_file_without_one_gives_none(tmp_path, trained_file):
    assert read_provenance(str(trained_file)) == RECORD
    fixture = load_fixture("golden_tiny_armhubert.pt")
    plain = tmp_path / "converted.safetensors"
    save_compact(str(plain), fixture["state_dict"], "armhubert", fixture["config"])
    assert read_provenance(str(plain)) is None


def test_a_damaged_record_is_one_error_naming_the_file_and_the_key(tmp_path, trained_file):
    tensors = load_file(str(trained_file))
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged), metadata={"format": "recycle-distill-student", "format_version": "1",
                                               "family": "armhubert", "config": "{}", "provenance": "[1, 2"})
    with pytest.raises(CheckpointError, match=rf"^{damaged}: damaged metadata: 'provenance' is not a JSON object"):
        read_provenance(str(damaged))


def test_a_training_run_records_its_teacher_data_objective_steps_and_precision(tmp_path):
    corpus = synthetic_train_corpus(tmp_path, utterances_per_speaker=3)
    output = tmp_path / "run"
    config = load_train_config(tiny_config(corpus, output, train={"max_steps": 2, "val_every_steps": 0}))
    Trainer(config).fit()
    record = read_provenance(str(output / "student.safetensors"))
    teacher_hash = hashlib.sha256(TEACHER.read_bytes()).hexdigest()
    files = sorted((corpus / "train-clean-100").rglob("*.flac"))
    hours = sum(soundfile.info(str(path)).frames for path in files) / 16000 / 3600
    assert record["teacher"] == {"kind": "hubert", "name": TEACHER.name, "sha256": teacher_hash}
    assert record["data"]["folders"] == [str(corpus / "train-clean-100")]
    assert record["data"]["utterances"] == len(files) == 6
    assert record["data"]["hours"] == pytest.approx(hours, abs=1e-4)
    assert (record["objective"], record["steps"], record["precision"]) == ("masking", 2, "fp32")


def test_export_carries_the_record_into_safetensors_and_onnx(tmp_path, trained_file, capsys):
    again = tmp_path / "again.safetensors"
    assert main(["export", str(trained_file), "--format", "safetensors", "-o", str(again)]) == 0
    assert read_provenance(str(again)) == RECORD
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    target = tmp_path / "student.onnx"
    assert main(["export", str(trained_file), "--format", "onnx", "-o", str(target)]) == 0
    props = {prop.key: prop.value for prop in onnx.load(str(target)).metadata_props}
    assert json.loads(props["recycle_distill.provenance"]) == RECORD


def test_the_hf_export_and_its_card_state_the_record(tmp_path, trained_file):
    pytest.importorskip("transformers")
    folder = tmp_path / "hf"
    assert main(["export", str(trained_file), "--format", "hf", "-o", str(folder)]) == 0
    assert json.loads((folder / "config.json").read_text())["recycle_distill"]["provenance"] == RECORD
    card = (folder / "README.md").read_text()
    assert f"| teacher | hubert_base_ls960.pt (hubert, sha256 {'ab' * 32}) |" in card
    assert "| data | /db/LibriSpeech/train-clean-100 (100.59 h, 28539 utterances) |" in card
    for row in ("| objective | masking |", "| optimizer steps | 1234 |", "| precision | bf16 |",
                "| trained with | recycle-distill 0.1.0 |"):
        assert row in card
    assert "unknown" not in card
    # An export folder carries the record on, into any format.
    again = tmp_path / "from-hf.safetensors"
    assert main(["export", str(folder), "--format", "safetensors", "-o", str(again)]) == 0
    assert read_provenance(str(folder)) == read_provenance(str(again)) == RECORD
    # Given by hand, --teacher and --data win over the record.
    by_hand = tmp_path / "hf2"
    assert main(["export", str(trained_file), "--format", "hf", "-o", str(by_hand), "--teacher", "HuBERT Base",
                 "--data", "LS 100h"]) == 0
    card = (by_hand / "README.md").read_text()
    assert "| teacher | HuBERT Base |" in card and "| data | LS 100h |" in card


@pytest.mark.parametrize("family, opening", [("armhubert", "An ARMHuBERT speech encoder"),
                                             ("maskhubert", "A MaskHuBERT speech encoder"),
                                             ("fithubert", "A FitHuBERT speech encoder")])
def test_the_card_opens_with_the_right_article(family, opening):
    config = {"encoder_layers": 2, "encoder_embed_dim": 8, "encoder_ffn_embed_dim": 16, "encoder_attention_heads": 2}
    card = model_card(family=family, parameters=10, config=config, plain=False, release=None, teacher=None, data=None,
                      heads_file=None)
    assert f"\n{opening} (10 parameters)" in card


def test_a_card_cell_from_a_record_stays_one_table_cell(tmp_path):
    hostile = {**RECORD, "teacher": {"kind": "hubert", "name": "a|b\n| licence | stolen |", "sha256": None}}
    config = {"encoder_layers": 2, "encoder_embed_dim": 8, "encoder_ffn_embed_dim": 16, "encoder_attention_heads": 2}
    card = model_card(family="armhubert", parameters=10, config=config, plain=False, release=None, teacher=None,
                      data=None, heads_file=None, provenance=hostile)
    assert "| teacher | a\\|b \\| licence \\| stolen \\| (hubert) |" in card
    assert "\n| licence | stolen |" not in card


def test_each_kind_of_teacher_source_is_named_and_hashed_by_its_weights_file(tmp_path):
    from recycle_distill.training.provenance import teacher_provenance

    folder = tmp_path / "hubert-base-ls960"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    ckpt = tmp_path / "converted.ckpt"
    ckpt.write_bytes(b"upstream weights")
    digest = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (folder / "model.safetensors", ckpt)}
    assert teacher_provenance(str(folder) + "/", "hubert") == {
        "kind": "hubert", "name": "hubert-base-ls960", "sha256": digest[folder / "model.safetensors"]}
    assert teacher_provenance("s3prl:hubert_base", "hubert") == {"kind": "hubert", "name": "s3prl:hubert_base",
                                                                 "sha256": None}  # S3PRL downloads it
    assert teacher_provenance("s3prl:distilhubert", "upstream", upstream_ckpt=str(ckpt)) == {
        "kind": "upstream", "name": "s3prl:distilhubert", "sha256": digest[ckpt]}
