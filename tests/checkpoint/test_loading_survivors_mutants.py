"""``load_student`` (``checkpoint/loading.py``) with files crafted for what ``test_loading_mutants.py``
left: a Hugging Face folder holding NaN loaded for inspection, a compact file naming an unknown
or overlong family, a config that does not name its family, the one-line message of a config too
large to build, the fast blocks of a loaded model and overrides while the presets are searched.

Written for the survivors of mutation testing (docs/development.md, Mutation testing).
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from recycle_distill.checkpoint import CheckpointError, load_student, save_compact
from recycle_distill.students import FAMILIES
from recycle_distill.students.build import build_student, resolve_config
from recycle_distill.students.maskhubert import MaskHuBERT

from helpers.tiny_students import tiny_config, tiny_student

ENV = "RECYCLE_DISTILL_ALLOW_NON_FINITE"
KNOWN = "armhubert, maskhubert, starhubert, fithubert"
TOO_LARGE = "its config asks for a model too large to build"


@pytest.fixture(autouse=True)
def _no_opt_out(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def _compact(path, family, stored_family=None, **config):
    """A compact file of the tiny ``family`` student, naming ``stored_family`` and storing its config
    with ``config`` replaced."""
    model = tiny_student(family)
    save_compact(str(path), model.state_dict(), stored_family or family, dict(model.config.to_dict(), **config))
    return path


@pytest.fixture(scope="module")
def maskhubert_compact(tmp_path_factory):
    return _compact(tmp_path_factory.mktemp("compact") / "mask.safetensors", "maskhubert")


# ------------------------------------------------------------------- a Hugging Face folder with NaN
def test_a_hugging_face_folder_with_nan_loads_when_allowed(tmp_path, caplog):
    from recycle_distill.hf_export import export_hf

    folder = tmp_path / "maskhubert-hf"
    export_hf(tiny_student("maskhubert"), "maskhubert", str(folder))
    tensors = load_file(str(folder / "model.safetensors"))
    key = "encoder.layers.1.feed_forward.output_dense.weight"  # encoder.layers.1.fc2.weight in our keys
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING):
        model = load_student(folder, allow_non_finite=True)
    weight = model.state_dict()["encoder.layers.1.fc2.weight"]
    assert model.family == "maskhubert" and torch.isnan(weight.view(-1)[0])
    assert torch.isfinite(weight.view(-1)[1:]).all()
    assert (f"{folder / 'model.safetensors'}: 1 weight tensor(s) hold NaN or infinite values "
            f"(encoder.layers.1.fc2.weight); loaded anyway") in caplog.text


# ------------------------------------------------------------------- the family a compact file names
def test_a_compact_file_naming_an_unknown_family_is_refused_naming_the_file(tmp_path):
    path = _compact(tmp_path / "bert.safetensors", "maskhubert", stored_family="bert")
    with pytest.raises(CheckpointError) as caught:
        load_student(path)
    assert str(caught.value) == f"{path}: holds an unknown student family 'bert'; known: {KNOWN}"


def test_an_overlong_family_in_a_compact_file_is_cut_to_100_characters(tmp_path):
    stored = "a" * 60 + "z" * 90
    path = _compact(tmp_path / "long.safetensors", "maskhubert", stored_family=stored)
    with pytest.raises(CheckpointError) as caught:
        load_student(path, "maskhubert")
    shown = "a" * 48 + "..." + "z" * 48  # 99 characters: the first and last 48 around "..."
    assert str(caught.value) == f"{path}: holds a {shown} student, but the maskhubert entry was asked to load it"


# ------------------------------------------------- a config that does not name its family (reuse_pattern)
def test_a_given_config_is_read_for_the_family_asked_for(tmp_path):
    # The config sets reuse_pattern, so on its own it reads as an ARMHuBERT config; asked for as
    # MaskHuBERT (which reuses no attention) the pattern is dropped.
    state = tiny_student("maskhubert").state_dict()
    path = tmp_path / "mask.pt"
    torch.save(state, path)
    config = dict(tiny_config("maskhubert"), reuse_pattern="[True, False] * 2")
    config.pop("family", None)
    model = load_student(path, "maskhubert", model_config=config)
    assert model.family == "maskhubert" and model.config.reuse_pattern is None
    torch.testing.assert_close(model.state_dict(), state)


def test_a_stored_config_is_read_for_the_family_the_file_names(tmp_path):
    path = _compact(tmp_path / "mask.safetensors", "maskhubert", reuse_pattern="[True, False] * 2")
    model = load_student(path)
    assert model.family == "maskhubert" and model.config.reuse_pattern is None


# ----------------------------------------------------------------- a config too large to build
def _refusal_when_building_raises(monkeypatch, path, error):
    """The message of loading ``path`` when building its model raises ``error``."""
    def refuse(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(MaskHuBERT, "__init__", refuse)
    with pytest.raises(CheckpointError) as caught:
        load_student(path)
    return str(caught.value)


def test_too_large_shows_the_first_line_of_the_error(monkeypatch, maskhubert_compact):
    error = RuntimeError("the positional convolution needs 2**62 elements\nsecond line of detail")
    assert _refusal_when_building_raises(monkeypatch, maskhubert_compact, error) == (
        f"{maskhubert_compact}: {TOO_LARGE} ('the positional convolution needs 2**62 elements')")


def test_too_large_cuts_a_long_first_line_to_160_characters(monkeypatch, maskhubert_compact):
    line = "too many elements: " + "9" * 170
    text = _refusal_when_building_raises(monkeypatch, maskhubert_compact, OverflowError(line + "\nmore"))
    shown = "'" + line[:156] + "..."  # the quoted line cut to 160 characters
    assert len(shown) == 160
    assert text == f"{maskhubert_compact}: {TOO_LARGE} ({shown})"


def test_too_large_with_an_empty_error_shows_the_error(monkeypatch, maskhubert_compact):
    text = _refusal_when_building_raises(monkeypatch, maskhubert_compact, MemoryError())
    assert text == f"{maskhubert_compact}: {TOO_LARGE} (MemoryError())"


def test_sizes_whose_product_overflows_show_the_first_line_of_the_real_error(tmp_path):
    big = 2**31 - 1  # as test_hf_config_sizes.py: the positional conv (E, E, K) overflows int64
    sizes = dict(encoder_embed_dim=big, encoder_attention_heads=1, conv_pos_groups=1, conv_pos=big)
    path = _compact(tmp_path / "product.safetensors", "maskhubert", **sizes)
    with pytest.raises(CheckpointError) as caught:
        load_student(path)
    config, _ = resolve_config({"distiller": dict(tiny_student("maskhubert").config.to_dict(), **sizes)}, "maskhubert")
    errors = (OverflowError, RuntimeError, TypeError, ValueError, MemoryError)  # what load_student reports
    with torch.device("meta"), pytest.raises(errors) as built:
        FAMILIES["maskhubert"](config)
    first = str(built.value).strip().splitlines()[0]
    assert first and len(repr(first)) <= 160
    assert str(caught.value) == f"{path}: {TOO_LARGE} ({first!r})"


# --------------------------------------------------------------------------- the loaded model
def test_fast_blocks_reach_the_loaded_model(tmp_path):
    path = _compact(tmp_path / "arm.safetensors", "armhubert")
    model = load_student(path, blocks="fast")
    kinds = [type(module) for module in model.modules()]
    fast = [type(module) for module in build_student(tiny_config("armhubert"), "armhubert", blocks="fast").modules()]
    plain = [type(module) for module in build_student(tiny_config("armhubert"), "armhubert").modules()]
    assert fast != plain and kinds == fast
    torch.testing.assert_close(model.state_dict(), tiny_student("armhubert").state_dict())


def test_overrides_reach_the_config_of_a_matching_preset(tmp_path):
    path = tmp_path / "fit.pt"
    torch.save(build_student("fithubert").state_dict(), path)
    assert build_student("fithubert").config.reference_batched_reuse is False
    model = load_student(path, "fithubert", reference_batched_reuse=True)
    assert model.family == "fithubert" and model.config.reference_batched_reuse is True
