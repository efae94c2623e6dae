"""State-dict layouts and parameter counts equal the reference builds."""

import json

import pytest
import torch

from recycle_distill import build_student, list_presets

from conftest import CONF, KEYS, load_fixture

RELEASED = [
    ("armhubert-960", "armhubert-960.yaml", None, 26_448_448),
    ("armhubert-s-960", "armhubert-s-960.yaml", None, 22_394_080),
    ("armhubert-s-100", "armhubert-s-100.yaml", None, 22_394_080),
    ("maskhubert-960", "maskhubert-960.yaml", None, 26_635_840),
    ("starhubert-from-maskhubert-960", "maskhubert-960.yaml", "starhubert", None),
    ("starhubert-from-armhubert-s-960", "armhubert-s-960.yaml", "starhubert", None),
]


def _layout(model):
    return [[key, list(value.shape)] for key, value in model.state_dict().items()]


def _build_on_meta(source, family=None):
    with torch.device("meta"):
        return build_student(source, family=family)


@pytest.mark.parametrize("name, yaml_name, family, params", RELEASED)
def test_released_layouts_match_reference_keys(name, yaml_name, family, params):
    model = _build_on_meta(CONF / yaml_name, family)
    reference = json.loads((KEYS / f"{name}.keys.json").read_text())
    assert _layout(model) == reference
    lightning = json.loads((KEYS / f"{name}.lightning_keys.json").read_text())
    assert [[f"student_model.{k}", s] for k, s in reference] == lightning
    if params is not None:
        assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("family", ["armhubert", "maskhubert", "starhubert"])
def test_tiny_layouts_match_reference_keys(family):
    fixture = load_fixture(f"golden_tiny_{family}.pt")
    model = build_student(fixture["config"], family=family)
    reference = json.loads((KEYS / f"tiny_{family}.keys.json").read_text())
    assert _layout(model) == reference
    assert sum(p.numel() for p in model.parameters()) == fixture["meta"]["param_count_total"]


@pytest.mark.parametrize(
    "preset, millions, family",
    [
        ("armhubert", 26.45, "ARMHuBERT"),
        ("armhubert_s", 22.39, "ARMHuBERT"),
        ("armwavlm_s", 22.39, "ARMHuBERT"),
        ("maskhubert", 26.64, "MaskHuBERT"),
        ("starhubert", 22.31, "STaRHuBERT"),
        ("starhubert_l", 26.63, "STaRHuBERT"),
        ("fithubert", 22.49, "FitHuBERT"),
    ],
)
def test_presets_have_the_published_sizes(preset, millions, family):
    model = _build_on_meta(preset)
    assert type(model).__name__ == family
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - millions) < 0.01


def test_every_published_model_has_a_preset():
    assert set(list_presets()) == {"armhubert", "armhubert_s", "armwavlm_s", "maskhubert", "starhubert", "starhubert_l", "fithubert"}


def test_exact_counts_of_reimplemented_models():
    # docs/students.md §3: the counts the reference code gives for these architectures.
    assert sum(p.numel() for p in _build_on_meta("starhubert").parameters()) == 22_308_592
    assert sum(p.numel() for p in _build_on_meta("starhubert_l").parameters()) == 26_630_752
    assert sum(p.numel() for p in _build_on_meta("fithubert").parameters()) == 22_492_544


def test_reuse_layers_hold_only_value_and_output_projections():
    model = _build_on_meta("armhubert")
    reuse_keys = {k.split("self_attn.")[1] for k in model.state_dict() if k.startswith("encoder.layers.1.self_attn.")}
    assert reuse_keys == {"v_proj.weight", "v_proj.bias", "out_proj.weight", "out_proj.bias"}


def test_the_family_list_is_said_once():
    """Issue 11: setup.py, the upstream folders, patch_hub and the models each had their own list."""
    import ast
    import pathlib

    from recycle_distill.s3prl import patch as s3prl_patch
    from recycle_distill.families import FAMILY_NAMES
    from recycle_distill.students import FAMILIES
    from recycle_distill.upstreams import FAMILIES as UPSTREAM_FAMILIES

    assert tuple(FAMILIES) == FAMILY_NAMES and UPSTREAM_FAMILIES is FAMILY_NAMES and s3prl_patch.FAMILIES is FAMILY_NAMES
    root = pathlib.Path(__file__).resolve().parents[2]
    setup_text = (root / "setup.py").read_text()
    literals = [node.value for node in ast.walk(ast.parse(setup_text)) if isinstance(node, ast.Constant)]
    assert not set(FAMILY_NAMES) & set(literals)  # setup.py reads families.py instead
    assert all((root / "upstreams" / name / "hubconf.py").is_file() for name in FAMILY_NAMES)
