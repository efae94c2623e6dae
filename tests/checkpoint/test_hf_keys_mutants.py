"""The Hugging Face key table and folder reader on the inputs the round-trip tests never make
(issue 21, mutation testing of the ``hf`` group): sharded and ``pytorch_model.bin`` weights,
keys that map nowhere or twice, a ``hubert.`` prefix on only some keys, dropped task heads,
``allow_non_finite`` passed through, and ``config.json`` keys edited after the export.

Each refusal is checked as the whole line the user reads (the file, the key, the value), and
each load as tensors compared one by one. Nothing here needs transformers."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from recycle_distill import build_student
from recycle_distill.checkpoint import CheckpointError, load_student
from recycle_distill.checkpoint.hf_folder import is_hf_export, read_hf_student, read_plain_export
from recycle_distill.checkpoint.hf_keys import (convert_hf_state_dict, from_hf_state_dict, load_hf_weights,
                                                to_hf_state_dict)
from recycle_distill.checkpoint.safe_load import TeacherCheckpointError

from conftest import load_fixture
from helpers.json_files import edit_config

ALL_WEIGHT_FILES = "model.safetensors / pytorch_model.bin / model.safetensors.index.json / pytorch_model.bin.index.json"


def _student(family: str = "starhubert") -> torch.nn.Module:
    """The tiny fixture student with every tensor its own random values (norms included)."""
    model = build_student({"distiller": load_fixture(f"golden_tiny_{family}.pt")["config"]}, family=family)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return model


def _hf_state() -> dict[str, torch.Tensor]:
    model = _student()
    return to_hf_state_dict(model.state_dict(), model.config)[0]


def _same_tensors(a, b) -> bool:
    return set(a) == set(b) and all(torch.equal(a[key], b[key]) for key in a)


def _export(tmp_path, family="maskhubert"):
    from recycle_distill.hf_export import export_hf

    model = _student(family)
    folder = tmp_path / f"{family}-hf"
    pytest.importorskip("transformers")
    export_hf(model, family, str(folder))
    return model, folder


# --- load_hf_weights: the four layouts transformers writes -----------------------------------

@pytest.mark.parametrize("suffix, index", [(".safetensors", "model.safetensors.index.json"),
                                           (".bin", "pytorch_model.bin.index.json")])
def test_sharded_weights_load_every_tensor_of_every_shard(tmp_path, suffix, index):
    state = _hf_state()
    keys = sorted(state)
    shards = {f"model-0000{i + 1}-of-00003{suffix}": keys[i::3] for i in range(3)}
    for name, names in shards.items():
        part = {key: state[key] for key in names}
        if suffix == ".safetensors":
            save_file(part, str(tmp_path / name))
        else:
            torch.save(part, tmp_path / name)
    weight_map = {key: name for name, names in shards.items() for key in names}
    (tmp_path / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert _same_tensors(load_hf_weights(str(tmp_path)), state)


def test_a_single_pytorch_model_bin_loads_and_a_non_dict_one_is_refused(tmp_path):
    state = _hf_state()
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert _same_tensors(load_hf_weights(str(tmp_path)), state)
    torch.save([state["encoder.layer_norm.weight"]], tmp_path / "pytorch_model.bin")
    with pytest.raises(TeacherCheckpointError) as err:
        load_hf_weights(str(tmp_path))
    assert str(err.value) == f"{tmp_path / 'pytorch_model.bin'}: expected a state dict, found list"


def test_a_shard_outside_the_folder_and_a_folder_without_weights_are_named(tmp_path):
    with pytest.raises(TeacherCheckpointError) as err:
        load_hf_weights(str(tmp_path))
    assert str(err.value) == f"{tmp_path}: no {ALL_WEIGHT_FILES} in the directory"
    index = tmp_path / "model.safetensors.index.json"
    shard = "../" + "s" * 120 + ".safetensors"  # a long name is still shown whole
    index.write_text(json.dumps({"weight_map": {"encoder.layer_norm.weight": shard}}))
    with pytest.raises(TeacherCheckpointError) as err:
        load_hf_weights(str(tmp_path))
    assert str(err.value) == f"{index}: shard name '{shard}' points outside the directory"


# --- convert_hf_state_dict / to_hf_state_dict: keys that do not fit ---------------------------

def test_unknown_hf_keys_are_named(tmp_path):
    unknown = [f"encoder.adapter_{i:02d}.weight" for i in range(12)]
    state = {**_hf_state(), **{key: torch.zeros(1) for key in unknown}}
    with pytest.raises(TeacherCheckpointError) as err:
        convert_hf_state_dict(state, "group", "teacher-dir")
    message = str(err.value)
    assert message.startswith("teacher-dir: 12 Hugging Face key(s) with no S3PRL HubertModel counterpart: ")
    assert all(f"'{key}'" in message for key in unknown[:8])  # a list's repr shows its first 8 items


def test_two_hf_spellings_of_one_weight_are_refused_naming_both_sides():
    tensor = torch.ones(3)
    state = {"encoder.pos_conv_embed.conv.weight_g": tensor,
             "encoder.pos_conv_embed.conv.parametrizations.weight.original0": tensor}
    with pytest.raises(TeacherCheckpointError) as err:
        convert_hf_state_dict(state, "group", "teacher-dir")
    assert str(err.value) == ("teacher-dir: two HF keys map to 'encoder.pos_conv.0.weight_g' (second: "
                              "encoder.pos_conv_embed.conv.parametrizations.weight.original0)")


def test_the_hubert_prefix_is_stripped_only_when_every_encoder_key_has_it(caplog):
    state = _hf_state()
    prefixed = {f"hubert.{key}": value for key, value in state.items()}
    heads = {"lm_head.weight": torch.ones(2, 2), "lm_head.bias": torch.ones(2), "projector.weight": torch.ones(2, 2),
             "projector.bias": torch.ones(2)}
    with caplog.at_level(logging.INFO, logger="recycle_distill.checkpoint.hf_keys"):  # heads first: all keys are read
        converted = convert_hf_state_dict({**heads, **prefixed}, "group", "ctc-dir")
    assert _same_tensors(converted, convert_hf_state_dict(state, "group", "plain-dir"))
    assert [r.getMessage() for r in caplog.records] == [
        "ctc-dir: dropping 4 task-head tensors (['lm_head.weight', 'lm_head.bias', 'projector.weight'])"]
    # One key without the prefix: the prefixed ones are not encoder keys then, and are named.
    mixed = {**prefixed, "encoder.layer_norm.weight": state["encoder.layer_norm.weight"]}
    del mixed["hubert.encoder.layer_norm.weight"]
    with pytest.raises(TeacherCheckpointError) as err:
        convert_hf_state_dict(mixed, "group", "mixed-dir")
    assert str(err.value).startswith(f"mixed-dir: {len(state) - 1} Hugging Face key(s) with no S3PRL HubertModel "
                                     f"counterpart: ['hubert.")


def test_student_keys_transformers_has_no_place_for_are_named_up_to_eight():
    model = _student()
    extra = [f"encoder.layers.0.adapter_{i}.weight" for i in range(10)]
    state = {**model.state_dict(), **{key: torch.zeros(2) for key in extra}}
    with pytest.raises(CheckpointError) as err:
        to_hf_state_dict(state, model.config)
    assert str(err.value) == f"10 student key(s) have no transformers HubertModel counterpart: {extra[:8]}"


def test_an_unknown_key_in_a_plain_export_names_the_folder():
    model = _student()
    hf_state = {**to_hf_state_dict(model.state_dict(), model.config)[0], "encoder.adapter.weight": torch.zeros(2)}
    with pytest.raises(TeacherCheckpointError) as err:
        from_hf_state_dict(hf_state, model.config, "/exports/star")
    assert str(err.value) == ("/exports/star: 1 Hugging Face key(s) with no S3PRL HubertModel counterpart: "
                              "['encoder.adapter.weight']")


# --- hf_folder: allow_non_finite and the transformers keys of config.json ---------------------

def _poison(path, key):
    state = load_file(str(path))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(path), metadata={"format": "pt"})


def test_allow_non_finite_reaches_the_weights_and_the_heads_of_a_plain_export(tmp_path, monkeypatch):
    monkeypatch.delenv("RECYCLE_DISTILL_ALLOW_NON_FINITE", raising=False)
    _, folder = _export(tmp_path)
    _poison(folder / "model.safetensors", "encoder.layer_norm.weight")
    _poison(folder / "projection_heads.safetensors", "proj_head.0.lin_proj.weight")
    with pytest.raises(CheckpointError, match="model.safetensors: 1 weight tensor"):
        read_hf_student(str(folder))
    with pytest.raises(CheckpointError, match="model.safetensors: 1 weight tensor"):
        read_plain_export(str(folder))  # refused by default when called alone too
    state, family, _ = read_hf_student(str(folder), allow_non_finite=True)
    assert family == "maskhubert"
    assert bool(state["encoder.layer_norm.weight"].isnan().all())
    assert bool(state["proj_head.0.lin_proj.weight"].isnan().all())


def test_a_plain_export_without_the_transformers_size_keys_still_loads(tmp_path):
    model, folder = _export(tmp_path, "starhubert")

    def drop(config):
        for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "conv_dim", "conv_kernel", "conv_stride"):
            del config[key]

    edit_config(folder, drop)
    assert _same_tensors(load_student(str(folder)).state_dict(), model.state_dict())


@pytest.mark.parametrize("hf_key, column, what", [("conv_dim", 0, "dims"), ("conv_kernel", 1, "kernels"),
                                                 ("conv_stride", 2, "strides")])
def test_one_changed_entry_of_a_conv_key_is_named_with_the_block_value(tmp_path, hf_key, column, what):
    model, folder = _export(tmp_path, "starhubert")
    wanted = [spec[column] for spec in model.config.conv_feature_layers]
    edited = [*wanted[:-1], wanted[-1] + 1]  # same length, last entry off by one
    path = edit_config(folder, lambda config: config.__setitem__(hf_key, edited))
    with pytest.raises(CheckpointError) as err:
        load_student(str(folder))
    assert str(err.value) == (f"{path}: key '{hf_key}' is {edited}, but the recycle_distill block says "
                              f"conv_feature_layers {what} {wanted}; config.json was changed after the export")


def test_a_remote_code_export_passes_allow_non_finite_and_names_a_missing_weight_file(tmp_path, monkeypatch):
    monkeypatch.delenv("RECYCLE_DISTILL_ALLOW_NON_FINITE", raising=False)
    _, folder = _export(tmp_path, "armhubert")
    _poison(folder / "model.safetensors", "encoder.layer_norm.weight")
    with pytest.raises(CheckpointError, match="model.safetensors: 1 weight tensor"):
        read_hf_student(str(folder))
    state, family, _ = read_hf_student(str(folder), allow_non_finite=True)
    assert family == "armhubert" and bool(state["encoder.layer_norm.weight"].isnan().all())
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        read_hf_student(str(folder))
    assert str(err.value) == f"{folder}: no model.safetensors"


def test_a_config_json_that_is_not_json_is_named_with_the_parser_error(tmp_path):
    (tmp_path / "config.json").write_text("")
    with pytest.raises(CheckpointError) as err:
        read_hf_student(str(tmp_path))
    assert str(err.value) == (f"{tmp_path / 'config.json'}: not valid JSON "
                              f"(JSONDecodeError('Expecting value: line 1 column 1 (char 0)'))")


@pytest.mark.parametrize("version", [2, True, "1", None])
def test_a_format_version_this_library_does_not_read_is_refused(tmp_path, version):
    _, folder = _export(tmp_path, "starhubert")
    edit_config(folder, lambda config: config["recycle_distill"].__setitem__("format_version", version))
    with pytest.raises(CheckpointError) as err:
        read_hf_student(str(folder))
    assert str(err.value) == (f"{folder}: export format version {version!r} is not one this library reads (<= 1)")


def _shard(folder, parts=2):
    """Split a plain export's model.safetensors into ``parts`` shards and an index, as transformers does."""
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    keys = sorted(state)
    weight_map = {}
    for part in range(parts):
        name = f"model-{part + 1:05d}-of-{parts:05d}.safetensors"
        save_file({key: state[key] for key in keys[part::parts]}, str(folder / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in keys[part::parts]})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


def test_a_sharded_plain_export_loads_and_a_nan_in_a_shard_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("RECYCLE_DISTILL_ALLOW_NON_FINITE", raising=False)
    model, folder = _export(tmp_path, "starhubert")
    weight_map = _shard(folder)
    assert _same_tensors(load_student(str(folder)).state_dict(), model.state_dict())
    _poison(folder / weight_map["encoder.layer_norm.weight"], "encoder.layer_norm.weight")
    with pytest.raises(CheckpointError) as err:
        load_student(str(folder))
    assert str(err.value).startswith(f"{folder}: 1 weight tensor(s) hold NaN or infinite values")
    # An index without its weight map holds no weights: refused as a folder missing them all.
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError) as err:
        load_student(str(folder))
    assert str(err.value).startswith(f"{folder}: checkpoint does not match the starhubert config")


def test_a_weight_no_student_key_takes_and_a_non_identity_projection_name_the_folder(tmp_path):
    model, folder = _export(tmp_path, "starhubert")
    path = folder / "model.safetensors"
    original = load_file(str(path))
    save_file({**original, "encoder.adapter.weight": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        load_student(str(folder))
    assert str(err.value) == (f"{folder}: 1 Hugging Face key(s) with no S3PRL HubertModel counterpart: "
                              f"['encoder.adapter.weight']")
    bias = original["feature_projection.projection.bias"].clone()
    bias[0] = 1.0
    save_file({**original, "feature_projection.projection.bias": bias}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        load_student(str(folder))
    assert str(err.value) == (f"{folder}: the feature projection is not the identity, which this student family "
                              f"(equal CNN and encoder widths) cannot represent")
    # Without the projection (equal widths: the student has none) the folder still loads.
    save_file({k: v for k, v in original.items() if not k.startswith("feature_projection.projection.")}, str(path),
              metadata={"format": "pt"})
    assert _same_tensors(load_student(str(folder)).state_dict(), model.state_dict())


def test_what_is_and_is_not_an_export_folder(tmp_path):
    _, folder = _export(tmp_path, "starhubert")
    assert is_hf_export(str(folder)) is True
    assert is_hf_export(str(folder / "config.json")) is False  # a file, not a folder
    others = {"empty": None, "no block": {"model_type": "hubert"}, "block not a dict": {"recycle_distill": 1},
              "not json": "{", "a list": []}
    for name, content in others.items():
        other = tmp_path / name
        other.mkdir()
        if content is not None:
            (other / "config.json").write_text(content if isinstance(content, str) else json.dumps(content))
        assert is_hf_export(str(other)) is False, name


@pytest.mark.parametrize("config, message", [
    (None, "{folder}: a folder student needs a config.json (a Hugging Face export)"),
    ([], "{folder}: a Hugging Face folder without recycle-distill metadata (config.json has no 'recycle_distill' "
         "block); only folders written by 'recycle-distill export --format hf' load as students"),
    ({"recycle_distill": {"format_version": 1, "family": 3, "distiller": {}}},
     "{folder}: damaged recycle_distill metadata in config.json"),
    ({"recycle_distill": {"format_version": 1, "family": "starhubert", "distiller": []}},
     "{folder}: damaged recycle_distill metadata in config.json"),
], ids=["no config.json", "not an object", "family not a name", "distiller not a dict"])
def test_a_folder_without_usable_metadata_is_named(tmp_path, config, message):
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        read_hf_student(str(tmp_path))
    assert str(err.value) == message.format(folder=tmp_path)
