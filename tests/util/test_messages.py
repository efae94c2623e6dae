"""The bounded-text helpers every message uses (issue 20, item 18) and the option checks (item 15)."""

from __future__ import annotations

import pathlib

import pytest

from recycle_distill.util.messages import plain, short_repr
from recycle_distill.util.options import check_bool, check_seconds, check_whole_number


def test_plain_leaves_ordinary_text_alone():
    assert plain("/data/runs/student.safetensors") == "/data/runs/student.safetensors"
    assert plain(pathlib.Path("/a/b.ckpt")) == "/a/b.ckpt"
    assert plain("données/été.wav") == "données/été.wav"


def test_plain_escapes_control_characters_on_one_line():
    assert plain("a\nERROR: fake") == "a\\nERROR: fake"
    assert plain("tab\there\x1b[31m") == "tab\\there\\x1b[31m"
    assert plain(b"raw\xffbytes") == "raw\\xffbytes"


def test_plain_bounds_long_text_keeping_both_ends():
    text = "/very/long/" + "d" * 10**6 + "/student.ckpt"
    shown = plain(text)
    assert len(shown) <= 300 and shown.startswith("/very/long/ddd") and shown.endswith("/student.ckpt")
    assert "..." in shown
    hostile = plain("x\n" * 10**5, 100)
    assert len(hostile) <= 100 and "\n" not in hostile


def test_short_repr_bounds_strings_and_huge_numbers():
    assert short_repr("fp16") == "'fp16'"
    assert len(short_repr("y" * 10**6)) == 80
    assert short_repr(10**50).startswith("1000") and short_repr(10**50).endswith("000") and len(short_repr(10**50)) < 50
    assert short_repr(10**5000) == "<int of about 5001 digits>"


@pytest.mark.parametrize("value", ["no", "false", "", 0, 1, None, 1.0])
def test_check_bool_takes_real_bools_only(value):
    with pytest.raises(ValueError) as err:
        check_bool(value, "optimize")
    assert str(err.value) == f"optimize: expected True or False, got {value!r} ({type(value).__name__})"
    assert check_bool(True, "optimize") is True and check_bool(False, "optimize") is False


def test_check_whole_number_and_seconds():
    assert check_whole_number(4, "threads", 1, 256) == 4
    with pytest.raises(ValueError, match=r"^threads: expected a whole number from 1 to 256, got 0$"):
        check_whole_number(0, "threads", 1, 256)
    with pytest.raises(ValueError, match=r"^threads: expected a whole number from 1 to 256, got False \(bool\)$"):
        check_whole_number(False, "threads", 1, 256)
    assert check_seconds(None, "timeout") is None and check_seconds(2, "timeout") == 2.0
    with pytest.raises(ValueError, match=r"^timeout: expected a number of seconds above 0 \(or None for no limit\), "
                                         r"got nan$"):
        check_seconds(float("nan"), "timeout")
