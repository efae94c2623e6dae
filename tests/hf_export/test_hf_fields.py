"""Hugging Face paths checked field by field with values that differ: the dropout fields a
student export writes and a teacher folder is read with, every row of the HF <-> fairseq key
table for both feature-extractor variants (``group`` and ``layer``), and the exact-identity
check of the feature projection.

The other HF tests use default configs and freshly initialised models, where every dropout is
0.1 or 0.0 and every norm is ones and zeros: a swapped field or a wrong row maps equal values
onto each other and passes. Here each field and each tensor has its own value."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from recycle_distill import build_student
from recycle_distill.checkpoint import CheckpointError, load_student
from recycle_distill.hf_export import export_hf

from conftest import load_fixture

transformers = pytest.importorskip("transformers")

# Our distiller key -> (its value here, the transformers HubertConfig field). Five distinct
# values: any two fields swapped differ.
DROPOUTS = {"dropout": (0.11, "hidden_dropout"), "attention_dropout": (0.22, "attention_dropout"),
            "activation_dropout": (0.33, "activation_dropout"), "dropout_input": (0.44, "feat_proj_dropout"),
            "encoder_layerdrop": (0.05, "layerdrop")}
VALUES = {key: value for key, (value, _) in DROPOUTS.items()}
# Where each value ends up: the transformers modules, and S3PRL's (fairseq's) HubertModel modules.
IN_TRANSFORMERS = {
    "dropout": lambda hf: hf.encoder.layers[0].dropout.p,
    "attention_dropout": lambda hf: hf.encoder.layers[0].attention.dropout,
    "activation_dropout": lambda hf: hf.encoder.layers[0].feed_forward.intermediate_dropout.p,
    "dropout_input": lambda hf: hf.feature_projection.dropout.p,
    "encoder_layerdrop": lambda hf: hf.config.layerdrop,
}
IN_S3PRL = {
    "dropout": lambda model: model.encoder.layers[0].dropout1.p,
    "attention_dropout": lambda model: model.encoder.layers[0].self_attn.dropout_module.p,
    "activation_dropout": lambda model: model.encoder.layers[0].dropout2.p,
    "dropout_input": lambda model: model.dropout_input.p,
    "encoder_layerdrop": lambda model: model.encoder.layerdrop,
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def distinct_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and float buffer filled with its own random values (norms included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2 + 0.05)
    return model


def test_an_export_writes_each_dropout_into_its_own_field(tmp_path):
    config = dict(load_fixture("golden_tiny_maskhubert.pt")["config"])
    config.update(VALUES)
    model = build_student({"distiller": config}, family="maskhubert")
    export_hf(model, "maskhubert", str(tmp_path))
    written = json.loads((tmp_path / "config.json").read_text())
    assert {key: written[field] for key, (_, field) in DROPOUTS.items()} == VALUES
    hf_model = transformers.HubertModel.from_pretrained(str(tmp_path))
    assert {key: read(hf_model) for key, read in IN_TRANSFORMERS.items()} == VALUES
    back = load_student(str(tmp_path))
    assert {key: getattr(back.config, key) for key in DROPOUTS} == VALUES


def tiny_hf_hubert(norm: str) -> "transformers.HubertModel":
    """A tiny HubertModel of the base (``group``) or large (``layer``, stable layer norm) layout,
    with distinct dropouts and distinct weights in every tensor."""
    config = transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), conv_bias=norm == "layer",
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        **{field: value for value, field in DROPOUTS.values()})
    torch.manual_seed(0)
    return distinct_(transformers.HubertModel(config).eval())


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_a_teacher_folder_of_either_extractor_loads_every_tensor_where_transformers_has_it(tmp_path, norm):
    from recycle_distill.training.teacher import load_teacher

    hf_model = tiny_hf_hubert(norm)
    hf_model.save_pretrained(tmp_path)
    teacher = load_teacher(tmp_path)
    model = teacher.model
    assert {key: read(model) for key, read in IN_S3PRL.items()} == VALUES  # each dropout where it belongs
    # Same weights: every transformers layer output, computed from the distinct tensors.
    waves = torch.randn(2, 4000, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        expected = hf_model(waves, output_hidden_states=True).hidden_states
    got = list(teacher(waves).layer_results)
    assert len(got) == len(expected) - 1
    if norm == "layer":  # transformers' last hidden state of a pre-norm stack is after the final norm
        with torch.no_grad():
            got[-1] = model.encoder.layer_norm(got[-1])
    for index, state in enumerate(got):
        scale = float(expected[index + 1].abs().max())
        assert float((state - expected[index + 1]).abs().max()) <= 1e-5 * max(1.0, scale), f"layer {index}"
    # And tensor by tensor: each HF tensor appears once among the teacher's, equal.
    ours = list(model.state_dict().values())
    for key, tensor in hf_model.state_dict().items():
        assert sum(t.shape == tensor.shape and torch.equal(t, tensor) for t in ours) == 1, key


def test_a_feature_projection_off_the_identity_by_one_ulp_is_refused(tmp_path):
    model = build_student({"distiller": load_fixture("golden_tiny_starhubert.pt")["config"]}, family="starhubert")
    export_hf(model, "starhubert", str(tmp_path))
    path = tmp_path / "model.safetensors"
    original = load_file(str(path))
    width = model.config.encoder_embed_dim
    changes = {
        "diagonal one ulp above 1": ("feature_projection.projection.weight", (3, 3), 1.0 + 2.0 ** -23),
        "off-diagonal 1e-30": ("feature_projection.projection.weight", (0, width - 1), 1e-30),
        "bias 1e-30": ("feature_projection.projection.bias", (5,), 1e-30),
    }
    for what, (key, position, value) in changes.items():
        state = {name: tensor.clone() for name, tensor in original.items()}
        state[key][position] = value
        save_file(state, str(path), metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match="the feature projection is not the identity"):
            load_student(str(tmp_path))
            pytest.fail(what)
    save_file(original, str(path), metadata={"format": "pt"})
    assert all(torch.equal(a, b) for a, b in zip(load_student(str(tmp_path)).state_dict().values(),
                                                  model.state_dict().values(), strict=True))
