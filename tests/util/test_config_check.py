"""The one config checker (recycle_distill.util.config_check) and the configs that use it."""

from __future__ import annotations

import math
import re

import pytest

import recycle_distill
from recycle_distill.downstreams.cif_asr.config import ModelConfig
from recycle_distill.students import config as student_config
from recycle_distill.students.config import StudentConfig
from recycle_distill.training.config import load_train_config
from recycle_distill.util.config_check import (
    ConfigError,
    Range,
    check_known,
    check_type,
    did_you_mean,
    is_number,
    unknown_keys,
)


# ---------------------------------------------------------------- did you mean / unknown keys


def test_did_you_mean_names_the_closest_candidate_with_its_prefix():
    assert did_you_mean("bach_size", ["batch_size", "seed"]) == "; did you mean 'batch_size'?"
    assert did_you_mean("bach_size", ["batch_size"], prefix="train.") == "; did you mean 'train.batch_size'?"
    assert did_you_mean("zzzz", ["batch_size", "seed"]) == ""


def test_the_cutoff_decides_how_far_a_suggestion_may_be():
    # "beam" vs "beam_size": ratio 2*4/13 = 0.62; "lr" vs "lrd": 0.8; "mdl" vs "model": 0.75.
    assert did_you_mean("beam", ["beam_size"], cutoff=0.6) == "; did you mean 'beam_size'?"
    assert did_you_mean("beam", ["beam_size"], cutoff=0.7) == ""


def test_unknown_keys_keeps_the_order_of_the_mapping():
    assert unknown_keys({"b": 1, "known": 2, "a": 3}, {"known"}) == ["b", "a"]


def test_check_known_refuses_the_first_unknown_key_only():
    seen = []

    def message(shown, hint):
        seen.append((shown, hint))
        return f"{shown}: unknown{hint}"

    check_known({"seed": 1}, ["seed", "batch_size"], message)
    assert seen == []
    with pytest.raises(ConfigError, match=r"^bach_size: unknown; did you mean 'batch_size'\?$"):
        check_known({"seed": 1, "bach_size": 2, "other": 3}, ["seed", "batch_size"], message)
    assert seen == [("bach_size", "; did you mean 'batch_size'?")]


def test_check_known_shows_keys_as_told_and_survives_keys_that_are_not_text():
    with pytest.raises(ConfigError, match=r"^<5>: unknown$"):
        check_known({5: 1}, ["seed"], lambda shown, hint: f"{shown}: unknown{hint}", show=lambda key: f"<{key}>")
    with pytest.raises(ConfigError, match=r"^None: unknown$"):
        check_known({None: 1}, ["seed"], lambda shown, hint: f"{shown}: unknown{hint}")


# ---------------------------------------------------------------- types


@pytest.mark.parametrize("value, annotation, expected", [
    (3, "int", 3),
    (3, "float", 3.0),
    ("5e-3", "float", 0.005),  # YAML 1.1 reads 5e-3 as a string
    (None, "Optional[int]", None),
    ("one", "list", ["one"]),
    ([1, 2], "list[int]", [1, 2]),
])
def test_check_type_returns_the_value_in_its_type(value, annotation, expected):
    result = check_type(value, annotation, lambda wanted: "unused")
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("value, annotation, wanted", [
    (True, "int", "int"),  # a bool is never a number ...
    (True, "float", "float"),
    (1, "bool", "bool"),  # ... and a number never a bool
    (None, "int", "int"),
    ("x", "Optional[float]", "float"),
    ([1, True], "list[int]", "list[int]"),
])
def test_check_type_refuses_with_the_callers_words(value, annotation, wanted):
    with pytest.raises(ConfigError, match=rf"^key expects {re.escape(wanted)}$"):
        check_type(value, annotation, lambda expected: f"key expects {expected}")


# ---------------------------------------------------------------- ranges and numbers


def test_range_ends_are_closed_unless_said_otherwise():
    closed, open_ = Range(0, 1), Range(0, 1, low_closed=False, high_closed=False)
    assert 0 in closed and 1 in closed and 0.5 in closed and -0.1 not in closed and 1.1 not in closed
    assert 0 not in open_ and 1 not in open_ and 0.5 in open_
    assert 10**9 in Range(1) and 0 not in Range(1)
    assert -10**9 in Range(high=0) and 1 not in Range(high=0)
    assert math.nan not in Range(0, 1) and math.nan not in Range(0)


@pytest.mark.parametrize("interval, text", [
    (Range(0, 1), "[0, 1]"),
    (Range(0.0, 1.0, high_closed=False), "[0, 1)"),
    (Range(0.0, low_closed=False), "(0, inf)"),
    (Range(1), "[1, inf)"),
    (Range(high=5, high_closed=False), "(-inf, 5)"),
    (Range(0, 2**32 - 1), "[0, 4.29497e+09]"),
])
def test_range_is_written_as_messages_show_it(interval, text):
    assert str(interval) == text


@pytest.mark.parametrize("value, rule, ok", [
    (3, {}, True),
    (3.5, {}, True),
    (True, {}, False),
    (False, {"within": Range(0)}, False),
    ("3", {}, False),
    (None, {}, False),
    (3.0, {"integer": True}, False),
    (3, {"integer": True, "within": Range(1)}, True),
    (0, {"integer": True, "within": Range(1)}, False),
    (math.inf, {}, True),
    (math.inf, {"finite": True}, False),
    (math.nan, {"finite": True}, False),
    (math.nan, {"within": Range(0)}, False),
])
def test_is_number_never_takes_a_bool_or_text(value, rule, ok):
    assert is_number(value, **rule) is ok


# ---------------------------------------------------------------- one error class everywhere

STUDENT = {"conv_feature_layers": "[(512,10,5)]", "encoder_layers": 2, "encoder_embed_dim": 64,
           "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4, "conv_pos_groups": 4}


def test_every_config_raises_the_one_config_error():
    assert recycle_distill.ConfigError is student_config.ConfigError is ConfigError
    with pytest.raises(ConfigError):
        StudentConfig.from_dict({**STUDENT, "encoder_layers": True})
    with pytest.raises(ConfigError):
        load_train_config({"distiller": STUDENT, "train": {"bach_size": 1}})
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({"d_model": 0})


@pytest.mark.parametrize("refuse, message", [
    (lambda: ModelConfig.from_dict({"d_model": 0}), "model.d_model: a positive integer, got 0"),
    (lambda: StudentConfig.from_dict({**STUDENT, "encoder_layers": 0}), "config: config key 'encoder_layers': must be positive, got 0"),
])
def test_the_command_line_exits_2_for_any_config_error(refuse, message, capsys, monkeypatch):
    import recycle_distill.cli.convert as convert
    from recycle_distill.cli import main

    monkeypatch.setattr(convert, "run", lambda args: refuse())
    assert main(["convert", "x", "-o", "y"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
