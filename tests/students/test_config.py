"""Config parsing: the reference YAMLs load, strings are parsed safely, bad configs fail clearly."""

import logging

import pytest

from recycle_distill import ConfigError, StudentConfig, build_student
from recycle_distill.students.build import infer_family, resolve_config
from recycle_distill.util.literal import parse_literal

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


def test_inert_reference_keys_round_trip_but_are_not_typed_fields():
    """Issue 11: the reference YAML's inert keys are kept for round trips, outside the typed fields."""
    import dataclasses

    from recycle_distill.students.config import INERT_DEFAULTS

    names = {f.name for f in dataclasses.fields(StudentConfig)}
    assert not names & set(INERT_DEFAULTS) and "inert" in names
    config = StudentConfig.from_dict({**_tiny(), "fp16": False, "final_dim": 128, "encoder_layerdrop": 0.05})
    assert (config.fp16, config.final_dim, config.encoder_layerdrop, config.max_positions) == (False, 128, 0.05, 100000)
    again = StudentConfig.from_dict(config.to_dict())
    assert again == config and again.to_dict()["final_dim"] == 128
    with pytest.raises(ConfigError, match=r"^config: config key 'fp16': expected bool, got 'yes' \(str\)$"):
        StudentConfig.from_dict({**_tiny(), "fp16": "yes"})
    with pytest.raises(ConfigError, match="config key 'activation_fn': 'relu' is not supported"):
        StudentConfig.from_dict({**_tiny(), "activation_fn": "relu"})


def test_one_coercion_rule_for_both_configs():
    """Issue 11: the student and trainer configs share recycle_distill.util.coerce (YAML 1.1 reads
    '5e-3' without a dot as a string; both take it as a float now)."""
    from recycle_distill.util.coerce import TypeMismatch, coerce
    from recycle_distill.training.config import load_train_config

    assert StudentConfig.from_dict({**_tiny(), "dropout": "5e-3"}).dropout == 0.005
    config = load_train_config("maskhubert-960", ["teacher.teacher_model=t.pt", "data.audio_dir=/a",
                                                  "optimizer.lr=5e-3", "distiller.dropout=5e-3"])
    assert config.optimizer.lr == 0.005 and config.student.dropout == 0.005
    assert coerce((1, 2), "list[int]") == [1, 2] and coerce(None, "Optional[list[bool]]") is None
    for value, annotation in ((True, "int"), (1, "bool"), ("x", "float"), ([1, True], "list[int]"), (None, "int")):
        with pytest.raises(TypeMismatch):
            coerce(value, annotation)
