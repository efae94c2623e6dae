"""Students as Hugging Face models: export, AutoModel parity, heads, card, load back (issue 10)."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from safetensors.torch import load_file

from recycle_distill import build_student
from recycle_distill.checkpoint import CheckpointError, load_student
from recycle_distill.cli import main as cli_main
from recycle_distill.checkpoint.hf_keys import HEADS_FILE, apply_projection_heads
from recycle_distill.hf_export import export_hf, read_card_metadata
from recycle_distill.hf_export import model_card as card_module
from recycle_distill.hf_export.remote_code import render, template_text

from conftest import load_fixture, write_lightning_checkpoint, write_yaml
from helpers.hf_home import hf_home  # noqa: F401  (autouse: a temporary HF_HOME)

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-5
TINY_FIT = {
    "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(48, 2, 2)] * 2",
    "encoder_layers": 3, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 32, "encoder_attention_heads": 4,
    "pred_head_final_dim": 24, "enable_tr_layer": True, "tr_reduce_factor": 2, "tr_conv1d_kernel": 2,
    "conv_pos_groups": 4, "pred_layer_id": "[0, 2]",
}
REMOTE = ("armhubert", "fithubert")



def _batch():
    """Three waves (1 s, 0.7 s, 0.45 s) zero-padded to 1 s: (B, S) waves, (B,) lengths, (B, S) attention mask."""
    generator = torch.Generator().manual_seed(3)
    lengths = torch.tensor([16000, 11200, 7200])
    waves = torch.randn(3, 16000, generator=generator) * 0.1
    mask = torch.arange(16000)[None, :] < lengths[:, None]
    return waves * mask, lengths, mask.long()


def _tiny_release(tmp_path, family):
    """(Lightning ckpt, -g yaml) in the released layout: the tiny fixture weights, or a tiny random FitHuBERT."""
    if family == "fithubert":
        torch.manual_seed(0)
        state = build_student(TINY_FIT, family="fithubert").state_dict()
        return write_lightning_checkpoint(tmp_path / "fit.ckpt", state), write_yaml(tmp_path / "fit.yaml", {"distiller": TINY_FIT})
    fixture = load_fixture(f"golden_tiny_{family}.pt")
    ckpt = write_lightning_checkpoint(tmp_path / f"{family}.ckpt", fixture["state_dict"])
    return ckpt, write_yaml(tmp_path / f"{family}.yaml", {"distiller": fixture["config"]})


def _auto_model(directory, family):
    return transformers.AutoModel.from_pretrained(str(directory), trust_remote_code=family in REMOTE).eval()


def _max_diff(ours, theirs):
    assert len(ours) == len(theirs)
    return max(float((a - b).abs().max()) for a, b in zip(ours, theirs))


def _check_parity(model, directory, family):
    """AutoModel's layer outputs and heads against ours on a padded batch; returns the two max diffs."""
    waves, lengths, mask = _batch()
    hf_model = _auto_model(directory, family)
    with torch.no_grad():
        ours = model(waves, lengths)
        theirs = hf_model(waves, attention_mask=mask, output_hidden_states=True)
    layer_diff = _max_diff(ours.layer_results, theirs.hidden_states[1:])
    if family in REMOTE:
        head_diff = _max_diff(ours.hidden_states, theirs.s3prl_hidden_states)
        assert _max_diff(ours.projections, theirs.projection_states) <= TOLERANCE
    else:
        heads_path = directory / HEADS_FILE
        heads = load_file(str(heads_path)) if heads_path.exists() else {}
        assert heads_path.exists() == (family == "maskhubert")
        head_diff = _max_diff(ours.hidden_states, apply_projection_heads(heads, theirs.hidden_states))
    return layer_diff, head_diff


def _bit_exact(model, directory):
    back = load_student(str(directory))
    reference, loaded = model.state_dict(), back.state_dict()
    assert type(back) is type(model) and back.config == model.config
    assert set(reference) == set(loaded)
    return all(torch.equal(reference[key], loaded[key]) for key in reference)


@pytest.mark.parametrize("family", ["maskhubert", "starhubert", "armhubert", "fithubert"])
def test_released_format_export_loads_in_transformers_and_back(tmp_path, family, capsys):
    ckpt, config = _tiny_release(tmp_path, family)
    out = tmp_path / "export"
    assert cli_main(["export", str(ckpt), "-g", str(config), "--family", family, "--format", "hf", "-o", str(out)]) == 0
    assert "Hugging Face folder" in capsys.readouterr().out
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["model_type"] == ("hubert" if family in ("maskhubert", "starhubert") else family)
    assert ("auto_map" in hf_config) == (family in REMOTE)
    model = load_student(str(ckpt), family, str(config))
    layer_diff, head_diff = _check_parity(model, out, family)
    assert layer_diff <= TOLERANCE and head_diff <= TOLERANCE, (layer_diff, head_diff)
    assert _bit_exact(model, out)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["armhubert", "maskhubert"])
def test_random_full_size_preset_matches(tmp_path, preset):
    out = tmp_path / preset
    assert cli_main(["export", preset, "--seed", "1", "--format", "hf", "-o", str(out)]) == 0
    model = load_student(str(out))
    assert sum(p.numel() for p in model.parameters()) == {"armhubert": 26_448_448, "maskhubert": 26_635_840}[preset]
    layer_diff, head_diff = _check_parity(model, out, preset)
    assert layer_diff <= TOLERANCE and head_diff <= TOLERANCE, (layer_diff, head_diff)


def test_plain_export_uses_transformers_hubert_names_and_an_exact_identity_projection(tmp_path):
    model = build_student({"distiller": load_fixture("golden_tiny_starhubert.pt")["config"]}, family="starhubert")
    export_hf(model, "starhubert", str(tmp_path))
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert "encoder.layers.0.attention.q_proj.weight" in weights and "masked_spec_embed" not in weights
    width = model.config.encoder_embed_dim
    assert torch.equal(weights["feature_projection.projection.weight"], torch.eye(width))
    hf_model = transformers.HubertModel.from_pretrained(str(tmp_path))
    assert not hasattr(hf_model, "masked_spec_embed")  # STaRHuBERT has no mask embedding


@pytest.mark.parametrize("family", REMOTE)
def test_generated_files_are_the_template_renamed(tmp_path, family):
    """Parity guard: what an export ships is the package's template, split and renamed only."""
    torch.manual_seed(0)
    model = build_student(TINY_FIT if family == "fithubert" else load_fixture("golden_tiny_armhubert.pt")["config"],
                          family=family)
    export_hf(model, family, str(tmp_path))
    files = render(family)
    prefix = {"armhubert": "ARMHuBERT", "fithubert": "FitHuBERT"}[family]
    for name, source in files.items():
        assert (tmp_path / name).read_text() == source
        assert "StudentHF" not in source and "recycle_distill" not in source.replace("recycle_distill/hf_export", "")
    template = template_text()
    config_part, model_part = template[template.index("from __future__"):].split("# ==== modeling ====\n")
    assert config_part.replace("StudentHF", prefix).replace('"student-hf"', f'"{family}"') in files[f"configuration_{family}.py"]
    assert model_part.replace("StudentHF", prefix) in files[f"modeling_{family}.py"]


def test_model_card_states_parameters_family_and_published_numbers(tmp_path, monkeypatch):
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    model = build_student({"distiller": fixture["config"]}, family="maskhubert")
    params = sum(p.numel() for p in model.parameters())
    export_hf(model, "maskhubert", str(tmp_path / "ours"), teacher="tiny HuBERT", data="espeak")
    meta = read_card_metadata((tmp_path / "ours" / "README.md").read_text())
    assert meta["recycle_distill"]["parameters"] == params and meta["recycle_distill"]["family"] == "maskhubert"
    assert meta["license"] == "mit" and "model-index" not in meta
    assert f"{params:,} parameters" in (tmp_path / "ours" / "README.md").read_text()

    # A published release (by hub entry, or by the source file's sha256) gets the paper's SUPERB row.
    export_hf(model, "maskhubert", str(tmp_path / "released"), release="maskhubert_960h")
    meta = read_card_metadata((tmp_path / "released" / "README.md").read_text())
    results = {r["task"]["name"]: r["metrics"][0]["value"] for r in meta["model-index"][0]["results"]}
    assert results["SUPERB PR"] == 7.30 and results["SUPERB ASR"] == 9.77  # MaskHuBERT row as printed
    assert meta["license"] == "other" and meta["license_name"] == "as stated by the publisher"
    ckpt = write_lightning_checkpoint(tmp_path / "m.ckpt", fixture["state_dict"])
    monkeypatch.setitem(card_module.PUBLISHED_SHA256, card_module.file_sha256(str(ckpt)), "maskhubert_960h")
    assert card_module.identify_release(source_file=str(ckpt)) == "maskhubert_960h"
    assert card_module.identify_release(source_file=str(tmp_path / "ours" / "model.safetensors")) is None


@pytest.mark.s3prl
@pytest.mark.parametrize("family", ["maskhubert", "armhubert", "starhubert", "fithubert"])
def test_s3prl_upstream_takes_the_folder(tmp_path, family):
    ckpt, config = _tiny_release(tmp_path, family)
    model = load_student(str(ckpt), family, str(config))
    out = tmp_path / "export"
    export_hf(model, family, str(out))
    hubconf = importlib.import_module(f"recycle_distill.upstreams.{family}.hubconf")
    upstream = getattr(hubconf, f"{family}_local")(str(out))
    waves, lengths, mask = _batch()
    wavs = [waves[i, : int(lengths[i])] for i in range(3)]
    with torch.no_grad():
        states = upstream(wavs)["hidden_states"]
        theirs = _auto_model(out, family)(waves, attention_mask=mask, output_hidden_states=True)
    if family in REMOTE:
        expected = theirs.s3prl_hidden_states
    else:
        heads = load_file(str(out / HEADS_FILE)) if family == "maskhubert" else {}
        expected = apply_projection_heads(heads, theirs.hidden_states)
    assert _max_diff(states, expected) <= TOLERANCE


def test_folders_that_are_not_our_exports_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    with pytest.raises(CheckpointError, match="without recycle-distill metadata"):
        load_student(str(tmp_path))
    assert cli_main(["export", str(tmp_path), "--format", "onnx", "-o", str(tmp_path / "x")]) == 1


def test_an_unknown_export_format_is_named_with_the_choices(tmp_path, capsys):
    assert cli_main(["export", "armhubert", "--format", "tflite", "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "'tflite'" in err and "safetensors, hf, onnx" in err
    assert not (tmp_path / "x").exists()


def test_safetensors_format_is_what_convert_writes(tmp_path):
    ckpt, config = _tiny_release(tmp_path, "armhubert")
    exported, converted = tmp_path / "e.safetensors", tmp_path / "c.safetensors"
    assert cli_main(["export", str(ckpt), "-g", str(config), "-o", str(exported)]) == 0
    assert cli_main(["convert", str(ckpt), "-g", str(config), "-o", str(converted)]) == 0
    a, b = load_file(str(exported)), load_file(str(converted))
    assert set(a) == set(b) and all(torch.equal(a[key], b[key]) for key in a)
    assert load_student(str(exported), "armhubert").config == load_student(str(converted), "armhubert").config


def test_re_export_into_the_same_folder_leaves_nothing_stale(tmp_path):
    mask = build_student({"distiller": load_fixture("golden_tiny_maskhubert.pt")["config"]}, family="maskhubert")
    export_hf(mask, "maskhubert", str(tmp_path))
    assert (tmp_path / HEADS_FILE).exists()
    star = build_student({"distiller": load_fixture("golden_tiny_starhubert.pt")["config"]}, family="starhubert")
    export_hf(star, "starhubert", str(tmp_path))
    assert not (tmp_path / HEADS_FILE).exists()
    assert _bit_exact(star, tmp_path)
