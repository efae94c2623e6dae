"""The tiny students the precision, long-input, inference-layer and ONNX tests run.

ARMHuBERT, MaskHuBERT and STaRHuBERT carry the fixture weights of ``tests/data/fixtures``
(96-dim, 4 layers); FitHuBERT has no fixture, so it is the trainer tests' tiny shape
(:func:`train_helpers.tiny_distiller`) with random weights from seed 0.
"""

from __future__ import annotations

import torch
from torch import nn

from recycle_distill import build_student

from conftest import load_fixture
from helpers.train_helpers import tiny_distiller

TINY_FAMILIES = ("armhubert", "maskhubert", "starhubert", "fithubert")


def tiny_config(family: str) -> dict:
    """The ``distiller`` section of the tiny ``family`` student."""
    if family == "fithubert":
        return tiny_distiller("fithubert")
    return load_fixture(f"golden_tiny_{family}.pt")["config"]


def tiny_student(family: str) -> nn.Module:
    """The tiny ``family`` student in eval mode: fixture weights, or FitHuBERT's from seed 0."""
    if family == "fithubert":
        torch.manual_seed(0)
        return build_student(tiny_config(family), family=family).eval()
    fixture = load_fixture(f"golden_tiny_{family}.pt")
    model = build_student(fixture["config"], family=family)
    model.load_state_dict(fixture["state_dict"])
    return model.eval()
