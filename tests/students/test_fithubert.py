"""FitHuBERT's own choices, pinned: the key layout (no released one exists), the odd-frame rule, pruning heads."""

from __future__ import annotations

import json

import pytest
import torch

from recycle_distill import build_student
from recycle_distill.students.blocks.heads import TimeUpsampler
from recycle_distill.training.state import export_student

from conftest import KEYS
from helpers.train_helpers import tiny_distiller


def test_preset_layout_matches_the_committed_keys():
    """README 'Our choices': encoder.tr_layer.conv, upsampler.conv, proj_head.0.{upsample.conv,lin_proj}."""
    with torch.device("meta"):
        model = build_student("fithubert")
    layout = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert layout == json.loads((KEYS / "fithubert.keys.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == 22_492_544


def test_upsampler_repeats_the_last_frame_for_an_odd_length():
    torch.manual_seed(0)
    upsampler = TimeUpsampler(8, 2)
    x = torch.randn(2, 5, 8)
    even, odd = upsampler(x, 10), upsampler(x, 11)
    assert odd.shape == (2, 11, 8)
    torch.testing.assert_close(odd[:, :10], even, rtol=0, atol=0)
    assert torch.equal(odd[:, 10], odd[:, 9]), "the missing frame repeats the one before, it is not zero"
    assert odd[:, 10].abs().sum() > 0
    # ConvTranspose1d(k=2, s=2) by hand: output frame 2t+j = W[:, :, j]^T x_t + b.
    w, b = upsampler.conv.weight, upsampler.conv.bias
    expected = torch.stack([x @ w[:, :, 0] + b, x @ w[:, :, 1] + b], dim=2).reshape(2, 10, 8)
    torch.testing.assert_close(even, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("samples", [16000, 15680])
def test_student_outputs_repeat_the_last_frame_only_when_odd(samples):
    torch.manual_seed(0)
    model = build_student(tiny_distiller("fithubert"), family="fithubert").eval()
    with torch.no_grad():
        out = model(torch.randn(1, samples) * 0.1)
    frames = out.hidden_states[0].shape[1]
    assert frames == int(model.frame_lengths(torch.tensor([samples]))[0])
    for states in (*out.hidden_states, *out.projections):
        assert states.shape[1] == frames
        assert torch.equal(states[:, -1], states[:, -2]) == (frames % 2 == 1), (frames, samples)


def test_export_keeps_only_the_last_head_renumbered(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = build_student(tiny_distiller("fithubert"), family="fithubert")
    path = export_student(str(tmp_path / "s.safetensors"), model, "fithubert", delete_projections=True)
    saved = load_file(path)
    heads = {key: value for key, value in saved.items() if key.startswith("proj_head.")}
    assert {key.split(".")[1] for key in heads} == {"0"}
    assert torch.equal(heads["proj_head.0.lin_proj.weight"], model.state_dict()["proj_head.3.lin_proj.weight"])
    assert torch.equal(saved["encoder.tr_layer.conv.weight"], model.state_dict()["encoder.tr_layer.conv.weight"])


def test_export_metadata_names_the_kept_head_and_other_families_keep_theirs(tmp_path):
    from recycle_distill.checkpoint import read_compact

    torch.manual_seed(0)
    model = build_student(tiny_distiller("fithubert"), family="fithubert")
    path = export_student(str(tmp_path / "s.safetensors"), model, "fithubert", delete_projections=True)
    state, family, config = read_compact(path)
    assert family == "fithubert" and config["pred_layer_id"] == [3] and config["encoder_layers"] == 4
    assert model.config.pred_layer_id == [0, 1, 2, 3], "the live model is not changed"
    assert set(state) == {k for k in model.state_dict() if not k.startswith("proj_head.")} | {
        "proj_head.0.lin_proj.weight", "proj_head.0.lin_proj.bias", "proj_head.0.upsample.conv.weight",
        "proj_head.0.upsample.conv.bias"}
    kept = export_student(str(tmp_path / "all.safetensors"), model, "fithubert", delete_projections=False)
    state, _, config = read_compact(kept)
    assert config["pred_layer_id"] == [0, 1, 2, 3] and set(state) == set(model.state_dict())
    arm = build_student(tiny_distiller("armhubert"), family="armhubert")
    with pytest.raises(ValueError, match="^delete_projections: armhubert's S3PRL features are its heads; keep them$"):
        export_student(str(tmp_path / "arm.safetensors"), arm, "armhubert", delete_projections=True)
    assert not (tmp_path / "arm.safetensors").exists()
