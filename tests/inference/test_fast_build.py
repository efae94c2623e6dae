"""Fast blocks chosen at construction: ``build_student(..., blocks="fast")`` (and ``load_student``,
the S3PRL upstream) computes exactly what ``optimize_for_inference`` makes of the plain model.

Bit for bit (``torch.equal``) on the same weights and input, for every tiny family and every
precision, with the shipped fast-path thresholds and with them shrunk (every blocked and
per-utterance branch).
"""

from __future__ import annotations

import pytest
import torch

from recycle_distill import build_student
from recycle_distill.checkpoint import load_student, save_compact
from recycle_distill.inference import FAST_BLOCKS, convert_precision, optimize_for_inference, torch_int8_available
from recycle_distill.s3prl.upstream import StudentUpstream
from recycle_distill.students.blocks.masks import pad_waveforms

from conftest import shrink_fast_paths
from helpers.tiny_students import TINY_FAMILIES, tiny_config, tiny_student


def _precisions() -> list:
    available, why = torch_int8_available()
    int8 = "int8" if available else pytest.param("int8", marks=pytest.mark.skip(reason=why))
    return ["fp32", "bf16", int8]


PRECISIONS = _precisions()


def waves() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(n, generator=generator) * 0.1 for n in (16000, 11200, 13600)]


def fast_build(family: str, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The tiny ``family`` student built with the fast blocks, holding ``weights``."""
    model = build_student(tiny_config(family), family=family, blocks="fast")
    model.load_state_dict(weights)
    return model


def assert_same_output(got, want) -> None:
    """Every tensor of two :class:`StudentOutput`s equal, dtype included."""
    for field in ("hidden_states", "layer_results", "projections"):
        a, b = getattr(got, field), getattr(want, field)
        assert (a is None) == (b is None), field
        for index, (x, y) in enumerate(zip(a or [], b or [], strict=True)):
            assert x.dtype == y.dtype and torch.equal(x, y), f"{field}[{index}]"
    for field in ("padding_mask", "features", "encoder_input"):
        x, y = getattr(got, field), getattr(want, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), field


@pytest.mark.parametrize("thresholds", ["shipped", "shrunk"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_built_fast_equals_the_converted_plain_model(family, precision, thresholds, monkeypatch):
    if thresholds == "shrunk":
        shrink_fast_paths(monkeypatch)
    plain = tiny_student(family)
    converted = optimize_for_inference(plain, precision)
    built = convert_precision(fast_build(family, plain.state_dict()), precision)
    assert [type(m) for m in built.modules()] == [type(m) for m in converted.modules()]
    assert list(built.state_dict()) == list(converted.state_dict())
    batch, lengths = pad_waveforms(waves())
    with torch.no_grad():
        assert_same_output(built(batch, lengths), converted(batch, lengths))
        assert_same_output(built(batch[:1]), converted(batch[:1]))  # nothing padded: no lengths


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_the_fast_build_differs_from_the_plain_one_in_module_classes_only(family):
    torch.manual_seed(0)
    plain = build_student(tiny_config(family), family=family)
    torch.manual_seed(0)
    fast = build_student(tiny_config(family), family=family, blocks="fast")
    plain_types, fast_types = [type(m) for m in plain.modules()], [type(m) for m in fast.modules()]
    assert plain_types != fast_types
    assert set(plain_types).isdisjoint(FAST_BLOCKS.values())
    assert set(fast_types) & set(FAST_BLOCKS.values())
    assert not set(fast_types) & set(FAST_BLOCKS)  # every plain block of the table was replaced
    # Same random init (same construction order) and the same state dict.
    plain_state, fast_state = plain.state_dict(), fast.state_dict()
    assert list(plain_state) == list(fast_state)
    assert all(torch.equal(plain_state[k], fast_state[k]) for k in plain_state)


def test_an_unknown_block_choice_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"^blocks: expected one of plain, fast, map_free, got 'quick'$"):
        build_student("armhubert", blocks="quick")


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_load_student_and_the_s3prl_upstream_build_the_fast_blocks(family, tmp_path):
    plain = tiny_student(family)
    path = str(tmp_path / f"{family}.safetensors")
    save_compact(path, plain.state_dict(), family, tiny_config(family))
    loaded = load_student(path, family, blocks="fast")
    assert {type(m) for m in loaded.modules()} & set(FAST_BLOCKS.values())
    upstream = StudentUpstream(path, family=family, dtype="bf16")
    assert [type(m) for m in upstream.model.modules()] == [type(m) for m in loaded.modules()]
    converted = optimize_for_inference(plain, "bf16")
    with torch.no_grad():
        got = upstream(waves())["hidden_states"]
        want = converted(*pad_waveforms([w.to(torch.bfloat16) for w in waves()])).hidden_states
    for x, y in zip(got, want, strict=True):
        assert torch.equal(x, y)
    plain_upstream = StudentUpstream(path, family=family, optimize=False)
    assert set(map(type, plain_upstream.model.modules())).isdisjoint(FAST_BLOCKS.values())
