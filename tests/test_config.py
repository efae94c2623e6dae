"""Config parsing: the reference YAMLs load, strings are parsed safely, bad configs fail clearly."""

import logging

import pytest

from recycle_distill import ConfigError, StudentConfig, build_student
from recycle_distill.builder import infer_family, resolve_config
from recycle_distill.literal import parse_literal

from conftest import CONF


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[(128, 10, 5)] + [(256, 3, 2)] * 2", [(128, 10, 5), (256, 3, 2), (256, 3, 2)]),
        ("[True, False] * 2", [True, False, True, False]),
        ("2 * [1]", [1, 1]),
        ("[11]", [11]),
        ("([1] + [2]) * 2", [1, 2, 1, 2]),
        ("[-1, 0.5, 'a', None]", [-1, 0.5, "a", None]),
    ],
)
def test_literal_parser_accepts_the_reference_grammar(text, expected):
    assert parse_literal(text) == expected


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('true')", "[x for x in range(3)]", "open('f')", "[1] * 2.5", "[1] - [1]", "a.b", "[1] * -1"],
)
def test_literal_parser_refuses_code_and_names_the_key(text):
    with pytest.raises(ValueError, match="conv_feature_layers"):
        parse_literal(text, "conv_feature_layers")


@pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("*.yaml")))
def test_reference_yamls_load_unchanged(name, caplog):
    with caplog.at_level(logging.WARNING):
        config, family = resolve_config(CONF / name)
    assert family == ("armhubert" if name.startswith("arm") else "maskhubert")
    assert config.conv_feature_layers[0] == (128, 10, 5)
    assert len(config.conv_feature_layers) == 9
    assert config.pred_layer_id == [11]
    if family == "armhubert":
        assert config.reuse_pattern == [True, False] * 6


def test_unknown_distiller_keys_warn(caplog):
    data = {"distiller": {**_tiny(), "not_a_real_key": 3}}
    with caplog.at_level(logging.WARNING):
        StudentConfig.from_dict(data)
    assert "not_a_real_key" in caplog.text


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(ConfigError, match="encoder_layers"):
        StudentConfig.from_dict({**_tiny(), "encoder_layers": "four"})
    with pytest.raises(ConfigError, match="layer_grad_scale"):
        StudentConfig.from_dict({**_tiny(), "layer_grad_scale": "yes"})


def test_missing_required_keys_are_listed():
    data = _tiny()
    del data["encoder_embed_dim"], data["conv_feature_layers"]
    with pytest.raises(ConfigError, match="conv_feature_layers, encoder_embed_dim"):
        StudentConfig.from_dict(data)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"reuse_pattern": "[True, False]"}, "reuse_pattern"),
        ({"reuse_pattern": "[False, True, True, True]"}, "reuse_pattern"),
        ({"encoder_attention_heads": 5}, "encoder_attention_heads"),
        ({"layer_norm_first": True}, "layer_norm_first"),
        ({"conv_feature_layers": "[(32, 10)]"}, "conv_feature_layers"),
        ({"conv_feature_layers": "eval('1')"}, "conv_feature_layers"),
    ],
)
def test_invalid_values_name_the_key(override, key):
    with pytest.raises((ConfigError, ValueError), match=key):
        StudentConfig.from_dict({**_tiny(), **override})


def test_family_inference():
    assert infer_family({"reuse_pattern": "[True, False]"}) == "armhubert"
    assert infer_family({"enable_tr_layer": True}) == "fithubert"
    assert infer_family({"enable_tr_layer": False}) == "maskhubert"
    assert type(build_student(_tiny(), family="starhubert")).__name__ == "STaRHuBERT"


def test_config_round_trips_through_dict():
    config = StudentConfig.from_dict(_tiny())
    assert StudentConfig.from_dict(config.to_dict()) == config


def test_unknown_source_is_refused():
    with pytest.raises(ConfigError, match="neither an existing config file nor a preset"):
        build_student("no_such_preset")


def _tiny() -> dict:
    return {
        "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(96, 2, 2)] * 2",
        "encoder_layers": 4,
        "encoder_embed_dim": 96,
        "encoder_ffn_embed_dim": 192,
        "encoder_attention_heads": 4,
        "pred_head_final_dim": 64,
    }
