"""What a Hugging Face export states, checked against the student it came from (issue 21,
mutation testing of the ``hf`` group).

The other export tests use the fixture sizes, which equal transformers' ``HubertConfig``
defaults (kernels 10,3,3,3,3,2,2, strides 5,2,..., 128-wide positional conv in 16 groups, no conv
bias): a field missing from ``config.json`` falls back to the same default and passes. Here the
student has its own value for every field, its tensors are random (norms included), and the
folder is read by transformers itself. The card's ``## Use`` block is run as written and must
give our S3PRL features; the card's front matter, the folder's refusals and the generated
files' headers are read back."""

from __future__ import annotations

import json
import os
import re
import runpy
import sys
import types

import pytest
import torch
from safetensors import safe_open

from recycle_distill import build_student, families
from recycle_distill.checkpoint import CheckpointError, load_student
from recycle_distill.hf_export import export, export_hf, read_card_metadata
from recycle_distill.hf_export.hubert_config import check_plain_exportable
from recycle_distill.hf_export.model_card import article, describe_data, describe_teacher, model_card
from recycle_distill.hf_export.remote_code import render
from recycle_distill.util.atomic import OutputError, default_mode

from conftest import load_fixture
from helpers.hf_home import hf_home  # noqa: F401  (autouse: a temporary HF_HOME)

transformers = pytest.importorskip("transformers")

# Every size differs from HubertConfig's default and from each other; the CNN ends wider (40)
# than the encoder (32), so the export has a real feature projection.
ODD = {"conv_feature_layers": "[(24, 6, 3)] + [(24, 3, 2)] * 2 + [(40, 2, 2)]", "conv_bias": True, "conv_pos": 12,
       "conv_pos_groups": 4, "encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 56,
       "encoder_attention_heads": 4, "pred_head_final_dim": 24, "dropout": 0.11, "attention_dropout": 0.22,
       "activation_dropout": 0.33, "dropout_input": 0.44, "encoder_layerdrop": 0.05}
# The CNN ends as wide as the encoder (no projection: the export writes the identity) after a
# layer of another width, so the identity's size must come from the last layer.
EQUAL_WIDTHS = {**ODD, "conv_feature_layers": "[(24, 6, 3)] + [(40, 3, 2)] * 2 + [(32, 2, 2)]"}
PLAIN = ("maskhubert", "starhubert")



def _student(config: dict, family: str) -> torch.nn.Module:
    """``family`` built from ``config`` with every float tensor its own random values, in eval mode."""
    model = build_student({"distiller": config}, family=family)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2 + 0.05)
    return model.eval()


def _expected_hubert_fields(config, family: str) -> dict:
    """The transformers HubertConfig fields a plain export of ``config`` must state (from the student config)."""
    masked = family == "maskhubert"
    return {
        "model_type": "hubert", "architectures": ["HubertModel"],
        "hidden_size": config.encoder_embed_dim, "num_hidden_layers": config.encoder_layers,
        "num_attention_heads": config.encoder_attention_heads, "intermediate_size": config.encoder_ffn_embed_dim,
        "hidden_act": "gelu", "hidden_dropout": config.dropout, "activation_dropout": config.activation_dropout,
        "attention_dropout": config.attention_dropout, "feat_proj_dropout": config.dropout_input,
        "feat_proj_layer_norm": True, "layerdrop": config.encoder_layerdrop, "layer_norm_eps": 1e-5,
        "feat_extract_norm": "group", "feat_extract_activation": "gelu",
        "conv_dim": [spec[0] for spec in config.conv_feature_layers],
        "conv_kernel": [spec[1] for spec in config.conv_feature_layers],
        "conv_stride": [spec[2] for spec in config.conv_feature_layers],
        "conv_bias": config.conv_bias, "num_conv_pos_embeddings": config.conv_pos,
        "num_conv_pos_embedding_groups": config.conv_pos_groups, "conv_pos_batch_norm": False,
        "do_stable_layer_norm": False, "apply_spec_augment": masked, "mask_time_prob": 0.05 if masked else 0.0,
        "mask_feature_prob": 0.0, "torch_dtype": "float32", "transformers_version": transformers.__version__,
    }


def _waves():
    """Two waves (0.5 s and 0.3 s) zero-padded: (2, 8000) waves, (2,) lengths, (2, 8000) attention mask."""
    lengths = torch.tensor([8000, 4800])
    mask = torch.arange(8000)[None, :] < lengths[:, None]
    return torch.randn(2, 8000, generator=torch.Generator().manual_seed(2)) * 0.1 * mask, lengths, mask.long()


@pytest.mark.parametrize("family", PLAIN)
@pytest.mark.parametrize("config", [ODD, EQUAL_WIDTHS], ids=["projection", "identity"])
def test_transformers_reads_every_field_and_tensor_of_a_plain_export_as_the_student_has_it(tmp_path, family, config):
    model = _student(config, family)
    written = export_hf(model, family, str(tmp_path / "out"))
    folder = tmp_path / "out"
    hf_config = json.loads((folder / "config.json").read_text())
    expected = _expected_hubert_fields(model.config, family)
    assert {key: hf_config.get(key, "<missing>") for key in expected} == expected  # each stated, not defaulted
    assert hf_config["recycle_distill"] == {"format_version": 1, "family": family,
                                            "distiller": model.config.to_dict(), "release": None}
    names = sorted(["config.json", "model.safetensors", "preprocessor_config.json", "README.md"]
                   + (["projection_heads.safetensors"] if family == "maskhubert" else []))
    assert written == {"directory": str(folder), "files": names, "kind": "hubert",
                       "parameters": sum(p.numel() for p in model.parameters())}
    assert {name: oct(os.stat(folder / name).st_mode & 0o777) for name in names} == \
        {name: oct(default_mode()) for name in names}  # every file follows the umask (safetensors writes 0o600)
    features = transformers.AutoFeatureExtractor.from_pretrained(str(folder))
    assert (type(features).__name__, features.sampling_rate, features.do_normalize, features.feature_size,
            features.padding_value, features.return_attention_mask) == ("Wav2Vec2FeatureExtractor", 16000, False, 1,
                                                                       0.0, True)
    hf_model, info = transformers.HubertModel.from_pretrained(str(folder), output_loading_info=True)
    assert not any(info.values()), info  # no key missing, unexpected or mis-shaped
    waves, lengths, mask = _waves()
    with torch.no_grad():
        ours = model(waves, lengths).layer_results
        theirs = hf_model.eval()(waves, attention_mask=mask, output_hidden_states=True).hidden_states[1:]
    assert len(ours) == len(theirs) == model.config.encoder_layers
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert float((a - b).abs().max()) <= 1e-5, f"layer {index}"
    back = load_student(str(folder))
    assert back.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values(), strict=True))


def test_a_remote_code_export_states_its_classes_dtype_version_and_provenance(tmp_path):
    model = _student(load_fixture("golden_tiny_armhubert.pt")["config"], "armhubert")
    provenance = {"objective": "armhubert", "steps": 12, "precision": "bf16"}
    written = export_hf(model, "armhubert", str(tmp_path / "out"), release="armhubert_960h", provenance=provenance)
    hf_config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {key: hf_config.get(key) for key in ("model_type", "architectures", "torch_dtype", "transformers_version")} \
        == {"model_type": "armhubert", "architectures": ["ARMHuBERTModel"], "torch_dtype": "float32",
            "transformers_version": transformers.__version__}
    assert hf_config["recycle_distill"] == {"format_version": 1, "family": "armhubert",
                                            "distiller": model.config.to_dict(), "release": "armhubert_960h",
                                            "provenance": provenance}
    assert written["kind"] == "remote-code" and written["files"] == sorted(os.listdir(tmp_path / "out"))
    # An export of ours, generated code included, is replaced by the next one.
    again = export_hf(model, "armhubert", str(tmp_path / "out"))
    assert again["files"] == written["files"]


def test_the_weight_files_state_their_format_and_what_the_heads_apply_to(tmp_path):
    export_hf(_student(load_fixture("golden_tiny_maskhubert.pt")["config"], "maskhubert"), "maskhubert", str(tmp_path))
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}  # what transformers checks before loading
    with safe_open(str(tmp_path / "projection_heads.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt", "applies_to": "hidden_states[i+1]"}


def test_an_export_without_transformers_or_of_an_unknown_family_says_so(tmp_path, monkeypatch):
    model = _student(load_fixture("golden_tiny_starhubert.pt")["config"], "starhubert")
    with pytest.raises(CheckpointError) as err:
        export_hf(model, "toyhubert", str(tmp_path / "toy"))
    assert str(err.value) == "no Hugging Face export for family 'toyhubert'"
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    with pytest.raises(RuntimeError) as err:
        export_hf(model, "starhubert", str(tmp_path / "none"))
    assert str(err.value) == "exporting a Hugging Face folder needs transformers: pip install 'recycle-distill[hf]'"
    assert not (tmp_path / "toy").exists() and not (tmp_path / "none").exists()


# --- the card ------------------------------------------------------------------------------

def _use_block(card: str) -> str:
    """The python block under the card's ``## Use`` heading."""
    use = card[card.index("\n## Use\n"):]
    return use[use.index("```python\n") + len("```python\n"): use.index("\n```", use.index("```python\n"))]


@pytest.mark.parametrize("family, config", [
    ("maskhubert", load_fixture("golden_tiny_maskhubert.pt")["config"]),
    ("starhubert", EQUAL_WIDTHS), ("armhubert", load_fixture("golden_tiny_armhubert.pt")["config"])])
def test_the_cards_use_block_runs_as_written_and_gives_our_features(tmp_path, family, config):
    model = _student(config, family)
    folder = tmp_path / "out"
    export_hf(model, family, str(folder))
    script = tmp_path / "use.py"  # the block as a user pastes it, DIR set to the folder
    script.write_text(_use_block((folder / "README.md").read_text()))
    with torch.no_grad():
        theirs = runpy.run_path(str(script), init_globals={"DIR": str(folder)})["feats"]
        ours = model(torch.zeros(1, 16000), torch.tensor([16000])).hidden_states
    assert len(theirs) == len(ours)
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert float((a - b).abs().max()) <= 1e-5, f"feature {index}"


def test_a_published_cards_front_matter_and_table_state_the_release(tmp_path):
    model = _student(load_fixture("golden_tiny_maskhubert.pt")["config"], "maskhubert")
    export_hf(model, "maskhubert", str(tmp_path), release="maskhubert_960h")
    text = (tmp_path / "README.md").read_text()
    meta = read_card_metadata(text)
    assert meta["tags"][-2:] == ["recycle-distill", "maskhubert"]
    assert meta["recycle_distill"]["teacher"] == "HuBERT Base" and meta["recycle_distill"]["data"] == "LibriSpeech 960h"
    (index,) = meta["model-index"]
    assert index["name"] == "maskhubert_960h"
    by_task = {entry["task"]["name"]: entry for entry in index["results"]}
    assert by_task["SUPERB ASR"]["task"] == {"type": "feature-extraction", "name": "SUPERB ASR"}
    assert by_task["SUPERB ASR"]["dataset"] == {"type": "superb", "name": "SUPERB"}
    assert by_task["SUPERB ASR"]["metrics"] == [{"type": "wer", "value": 9.77, "name": "ASR (WER %)"}]
    assert by_task["SUPERB SF F1"]["metrics"] == [{"type": "f1", "value": 87.31, "name": "SF_F1 (F1 %)"}]
    assert set(by_task["SUPERB KS"]["source"]) == {"name"}
    assert "| Overall | 77.8 |" in text  # MaskHuBERT's row of paper_results.csv as printed
    assert "A MaskHuBERT speech encoder" in text
    citation = families.CITATIONS[families.FAMILIES["maskhubert"].citation]
    assert "\n".join(citation) in text


def test_a_cards_teacher_data_and_run_come_from_the_caller_then_the_provenance(tmp_path):
    model = _student(load_fixture("golden_tiny_starhubert.pt")["config"], "starhubert")
    provenance = {"teacher": {"name": "hubert_base", "kind": "s3prl"},
                  "data": {"folders": ["/data/ls"], "hours": 1.5, "utterances": 420},
                  "objective": "starhubert", "steps": 321, "precision": "bf16"}
    export_hf(model, "starhubert", str(tmp_path / "a"), provenance=provenance)
    text = (tmp_path / "a" / "README.md").read_text()
    meta = read_card_metadata(text)["recycle_distill"]
    assert meta["teacher"] == "hubert_base (s3prl)" and meta["data"] == "/data/ls (1.5 h, 420 utterances)"
    assert "| optimizer steps | 321 |" in text and "| objective | starhubert |" in text
    export_hf(model, "starhubert", str(tmp_path / "b"), teacher="tiny HuBERT", data="espeak")
    meta = read_card_metadata((tmp_path / "b" / "README.md").read_text())["recycle_distill"]
    assert (meta["teacher"], meta["data"]) == ("tiny HuBERT", "espeak")
    export_hf(model, "starhubert", str(tmp_path / "c"))
    meta = read_card_metadata((tmp_path / "c" / "README.md").read_text())["recycle_distill"]
    assert meta["teacher"] == meta["data"] == "unknown (not recorded in the checkpoint)"


def test_a_card_cell_is_cut_only_past_500_characters():
    config = load_fixture("golden_tiny_starhubert.pt")["config"]
    config = build_student({"distiller": config}, family="starhubert").config.to_dict()

    def card(teacher):
        return model_card(family="starhubert", parameters=1, config=config, plain=True, release=None,
                          teacher=teacher, data="d", heads_file=None)

    exact, longer = "t" * 500, "u" * 501
    def row(text):
        return next(line for line in text.splitlines() if line.startswith("| teacher | "))

    assert row(card(exact)) == f"| teacher | {exact} |"
    assert row(card(longer)).startswith(f"| teacher | {longer[:500]} ") and longer not in row(card(longer))


def test_a_family_the_tables_do_not_know_gets_its_own_name_and_the_default_citation():
    config = build_student({"distiller": load_fixture("golden_tiny_starhubert.pt")["config"]},
                           family="starhubert").config.to_dict()
    text = model_card(family="toyhubert", parameters=10, config=config, plain=True, release=None,
                      teacher=None, data=None, heads_file=None)
    assert "# toyhubert-student" in text and "A toyhubert speech encoder" in text
    assert "\n".join(families.CITATIONS["jang2023recycleanddistill"]) in text


def test_provenance_records_as_card_text():
    assert describe_teacher({"name": "hubert_base", "kind": "s3prl", "sha256": "ab12"}) == "hubert_base (s3prl, sha256 ab12)"
    assert describe_teacher({}) == "unknown (unknown kind)"
    assert describe_data({"folders": ["/a", "/b"], "hours": 2.25, "utterances": 9}) == "/a, /b (2.25 h, 9 utterances)"
    assert describe_data({}) == "unknown folders (0 h, 0 utterances)"


def test_article():
    assert [article(word) for word in ("ARMHuBERT", "armhubert", "FitHuBERT", "EchoNet")] == ["An", "An", "A", "An"]


# --- refusals and generated files ---------------------------------------------------------

def test_a_folder_that_is_not_ours_is_refused_and_left_as_it_was(tmp_path):
    model = _student(load_fixture("golden_tiny_starhubert.pt")["config"], "starhubert")
    notes = tmp_path / "notes" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("mine")
    with pytest.raises(OutputError) as err:
        export_hf(model, "starhubert", str(notes.parent))
    for block in ({}, {"family": "starhubert"}, {"format_version": 1}):  # a block without both is not ours
        fake = tmp_path / f"fake{len(block)}{sorted(block)}"
        fake.mkdir()
        (fake / "config.json").write_text(json.dumps({"recycle_distill": block}))
        with pytest.raises(OutputError, match="not empty and not a recycle-distill export"):
            export_hf(model, "starhubert", str(fake))
        assert os.listdir(fake) == ["config.json"]
    assert str(err.value) == (f"{notes.parent}: not empty and not a recycle-distill export (no config.json with a "
                              f"'recycle_distill' block); it holds notes.txt; refusing to write into it: "
                              f"choose a new or empty folder")
    assert notes.read_text() == "mine"
    # Our export with a file the user added is refused too, naming the file; ours alone is replaceable.
    ours = tmp_path / "ours"
    assert export.check_hf_output(str(ours)) is False
    export_hf(model, "starhubert", str(ours))
    assert export.check_hf_output(str(ours)) is True
    (ours / "my_eval.csv").write_text("x")
    with pytest.raises(OutputError) as err:
        export_hf(model, "starhubert", str(ours))
    assert str(err.value) == (f"{ours}: holds files that an export does not write (my_eval.csv); refusing to "
                              f"replace it: move them out or choose another folder")
    assert (ours / "my_eval.csv").read_text() == "x"


def test_a_state_that_does_not_fit_hubert_model_is_named():
    model = _student(load_fixture("golden_tiny_starhubert.pt")["config"], "starhubert")
    from recycle_distill.hf_export.hubert_config import hubert_config
    from recycle_distill.checkpoint.hf_keys import to_hf_state_dict

    state = to_hf_state_dict(model.state_dict(), model.config)[0]
    del state["encoder.layer_norm.bias"]
    state.update({f"extra.{i}": torch.zeros(1) for i in range(7)})
    with pytest.raises(CheckpointError) as err:
        export._check_hubert_keys(hubert_config(model.config, "starhubert"), state)
    assert str(err.value) == ("the export does not fit the transformers HubertModel: missing ['encoder.layer_norm.bias'], "
                              "unexpected ['extra.0', 'extra.1', 'extra.2', 'extra.3', 'extra.4'], shape mismatches []")


def test_what_a_plain_hubert_model_cannot_express_is_listed():
    config = types.SimpleNamespace(required_seq_len_multiple=2, crop_seq_to_multiple=1, extractor_mode="layer_norm")
    with pytest.raises(CheckpointError) as err:
        check_plain_exportable(config, "armhubert")
    assert str(err.value) == ("cannot export as a plain transformers HubertModel: family armhubert (only maskhubert, "
                              "starhubert); required_seq_len_multiple/crop_seq_to_multiple other than 1; "
                              "extractor_mode='layer_norm'")


@pytest.mark.parametrize("family, prefix", [("armhubert", "ARMHuBERT"), ("fithubert", "FitHuBERT")])
def test_each_generated_file_says_what_it_holds(family, prefix):
    files = render(family)
    assert re.match(rf'"""Configuration of an? {prefix} student exported by recycle-distill',
                    files[f"configuration_{family}.py"])
    assert re.match(rf'"""Model of an? {prefix} student exported by recycle-distill', files[f"modeling_{family}.py"])
    with pytest.raises(ValueError) as err:
        render("maskhubert")
    assert str(err.value) == "no remote code for family 'maskhubert' (only armhubert, fithubert)"


def test_a_state_that_does_not_fit_the_generated_model_is_named():
    model = _student(load_fixture("golden_tiny_armhubert.pt")["config"], "armhubert")
    state = dict(model.state_dict())
    del state["encoder.layer_norm.bias"]
    hf_config = {"family": "armhubert", "distiller": model.config.to_dict()}
    with pytest.raises(CheckpointError) as err:
        export._check_remote_keys(hf_config, state)
    assert str(err.value) == ("the export does not fit the generated model: missing ['encoder.layer_norm.bias'], "
                              "unexpected [], shape mismatches []")


@pytest.mark.parametrize("drop, grow, extra, message", [
    (7, 0, 0, "missing ['k0', 'k1', 'k2', 'k3', 'k4'], unexpected [], shape mismatches []"),
    (0, 7, 0, "missing [], unexpected [], shape mismatches ['k0', 'k1', 'k2', 'k3', 'k4']"),
    (0, 0, 7, "missing [], unexpected ['x0', 'x1', 'x2', 'x3', 'x4'], shape mismatches []"),
], ids=["missing", "shapes", "unexpected"])
def test_each_kind_of_misfit_alone_is_refused_with_the_first_five(drop, grow, extra, message):
    reference = {f"k{i}": torch.zeros(2) for i in range(8)}
    state = {key: torch.zeros(3 if index < grow else 2) for index, key in enumerate(reference) if index >= drop}
    state.update({f"x{i}": torch.zeros(1) for i in range(extra)})
    with pytest.raises(CheckpointError) as err:
        export._compare(reference, state, "reference model")
    assert str(err.value) == f"the export does not fit the reference model: {message}"
    export._compare(reference, dict(reference), "reference model")  # a fit passes
