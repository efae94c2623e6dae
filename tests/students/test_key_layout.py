"""The released key layout as data (``recycle_distill/students/key_layout.py``; ``docs/students.md``,
section 2, "Key layout"): state dicts keep the released keys, modules carry no placeholders."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import recycle_distill as rd
from recycle_distill.students.key_layout import KEY_TABLE, to_module_key, to_released_key

from conftest import KEYS


@pytest.mark.parametrize("preset", rd.list_presets())
def test_every_key_round_trips_and_state_dicts_keep_the_released_names(preset):
    model = rd.build_student(preset)
    ours = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]
    assert all(to_module_key(to_released_key(key)) == key for key in ours)
    released = list(model.state_dict())
    assert set(released) == {to_released_key(key) for key in ours}
    assert not any(".conv." in key and "conv_layers" in key for key in released)
    assert "encoder.pos_conv.0.weight_g" in released and "feature_extractor.conv_layers.0.0.weight" in released


def test_released_key_lists_are_unchanged():
    for name in ("armhubert-960", "maskhubert-960"):
        expected = json.loads((KEYS / f"{name}.keys.json").read_text())
        expected = [item if isinstance(item, str) else item[0] for item in expected]
        model = rd.build_student(name.split("-")[0])
        assert list(model.state_dict()) == expected


def test_both_namings_load_and_unknown_keys_are_refused():
    model = rd.build_student("maskhubert")
    released = model.state_dict()
    ours = {to_module_key(key): value for key, value in released.items()}
    for state in (released, ours):
        fresh = rd.build_student("maskhubert")
        fresh.load_state_dict(state)
        assert torch.equal(fresh.feature_extractor.conv_layers[0].conv.weight,
                           model.feature_extractor.conv_layers[0].conv.weight)
    bad = dict(released)
    bad["feature_extractor.conv_layers.0.1.weight"] = torch.zeros(1)  # the dropout slot holds nothing
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*conv_layers\.0\.1\.weight"):
        rd.build_student("maskhubert").load_state_dict(bad)


def test_modules_carry_no_placeholders():
    model = rd.build_student("armhubert")
    assert not [name for name, module in model.named_modules() if isinstance(module, nn.Dropout) and "feature_extractor" in name]
    assert not any(name.split(".")[-1] == "0" for name, _ in model.encoder.pos_conv.named_modules() if name)

def test_each_table_row_maps_a_real_key():
    keys = set(rd.build_student("armhubert").state_dict())
    for ours, released in KEY_TABLE:
        fields = {"i": "0", "param": "weight_g" if "pos_conv" in ours else "weight"}
        assert released.format(**fields) in keys
        assert to_module_key(released.format(**fields)) == ours.format(**fields)
