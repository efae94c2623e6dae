"""The loss functions' contracts beyond their values: default weights, reduction dtype, exact error messages.

Written to kill the mutants that survived ``test_losses.py`` (README, Development: mutation testing).
"""

from __future__ import annotations

import re

import pytest
import torch

from recycle_distill.losses import fithubert_hint_loss, masking_distillation_loss, star_loss, validation_loss
from recycle_distill.losses.common import cut_frames, cut_mask, loss_dtype


def _layers(seed: int, count: int = 3, shape=(2, 6, 4), dtype=torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator).to(dtype) for _ in range(count)]


def _mask() -> torch.Tensor:
    return torch.tensor([[True, False, True, False, False, True], [False, True, True, False, True, False]])


def test_default_weights_are_0_1_for_hints_and_1_0_for_the_last_layer():
    student, unmasked, masked = _layers(0), _layers(1), _layers(2)
    total, terms = masking_distillation_loss(student, unmasked, masked, _mask(), [0, 1])
    explicit, _ = masking_distillation_loss(student, unmasked, masked, _mask(), [0, 1], hint_weight=0.1, last_weight=1.0)
    torch.testing.assert_close(total, explicit, rtol=0, atol=0)
    torch.testing.assert_close(terms["hint_loss"], 0.1 * (terms["mask_hint_loss"] + terms["unmask_hint_loss"]))
    torch.testing.assert_close(terms["rec_loss"], terms["mask_rec_loss"] + terms["unmask_rec_loss"])
    total, _ = validation_loss(student, unmasked, [0, 1])
    explicit, _ = validation_loss(student, unmasked, [0, 1], hint_weight=0.1, last_weight=1.0)
    torch.testing.assert_close(total, explicit, rtol=0, atol=0)
    total, _ = fithubert_hint_loss(student, unmasked)
    explicit, _ = fithubert_hint_loss(student, unmasked, hint_weight=0.1, last_weight=1.0)
    torch.testing.assert_close(total, explicit, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_reduced_in_float32(dtype):
    assert loss_dtype(torch.zeros(1, dtype=dtype)) == torch.float32
    assert loss_dtype(torch.zeros(1, dtype=dtype), torch.zeros(1, dtype=torch.float64)) == torch.float64
    assert loss_dtype() == torch.float32
    student, unmasked, masked = _layers(0, dtype=dtype), _layers(1, dtype=dtype), _layers(2, dtype=dtype)
    total, terms = masking_distillation_loss(student, unmasked, masked, _mask(), [0])
    as_float = [[t.float() for t in layers] for layers in (student, unmasked, masked)]
    expected, _ = masking_distillation_loss(*as_float, _mask(), [0])
    assert total.dtype == torch.float32 and all(term.dtype == torch.float32 for term in terms.values())
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=0)
    total, _ = validation_loss(student, unmasked, [0])
    assert total.dtype == torch.float32
    total, terms = star_loss(student, unmasked, student_inputs=student[0], teacher_inputs=unmasked[0])
    assert total.dtype == torch.float32


def test_float64_inputs_stay_float64():
    student, unmasked, masked = (_layers(s, dtype=torch.float64) for s in range(3))
    total, _ = masking_distillation_loss(student, unmasked, masked, _mask(), [0])
    assert total.dtype == torch.float64


def test_masking_loss_error_messages():
    student, unmasked, masked = _layers(0), _layers(1), _layers(2)
    with pytest.raises(ValueError, match="^mask_indices is required; without masking use validation_loss$"):
        masking_distillation_loss(student, unmasked, masked, None, [0])
    with pytest.raises(ValueError, match=re.escape("mask_indices: expected a (B, T) mask with B=2, got shape (3, 6)")):
        masking_distillation_loss(student, unmasked, masked, torch.zeros(3, 6, dtype=torch.bool), [0])
    with pytest.raises(ValueError, match=re.escape("padding_mask: expected a (B, T) mask with B=2, got shape (2,)")):
        masking_distillation_loss(student, unmasked, masked, _mask(), [0], padding_mask=torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="^padding_mask: expected a bool mask, got torch.int64$"):
        masking_distillation_loss(student, unmasked, masked, _mask(), [0], padding_mask=torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="^mask_indices has 4 frames, fewer than the student's 6$"):
        masking_distillation_loss(student, unmasked, masked, _mask()[:, :4], [0])


def test_cut_helpers_error_messages():
    with pytest.raises(ValueError, match=re.escape("x: expected at least (B, T), got shape (5,)")):
        cut_frames(torch.zeros(5), 3, "x")
    with pytest.raises(ValueError, match="^x has 2 frames, fewer than the student's 3$"):
        cut_frames(torch.zeros(4, 2, 7), 3, "x")
    assert cut_frames(torch.arange(12).reshape(2, 6), 4, "x").tolist() == [[0, 1, 2, 3], [6, 7, 8, 9]]
    # Either wrong rank or wrong batch is refused (not only both at once).
    with pytest.raises(ValueError, match=re.escape("m: expected a (B, T) mask with B=2, got shape (2, 6, 1)")):
        cut_mask(torch.zeros(2, 6, 1, dtype=torch.bool), 2, 6, "m")
    with pytest.raises(ValueError, match=re.escape("m: expected a (B, T) mask with B=2, got shape (1, 6)")):
        cut_mask(torch.zeros(1, 6, dtype=torch.bool), 2, 6, "m")
    assert cut_mask(None, 2, 6, "m") is None
