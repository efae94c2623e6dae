"""The loss functions' contracts beyond their values: default weights, reduction dtype, exact error messages.

Written to kill the mutants that survived ``test_losses.py`` (README, Development: mutation testing).
"""

from __future__ import annotations

import re

import pytest
import torch

from recycle_distill.training.losses import (
    fithubert_hint_loss,
    masking_distillation_loss,
    star_loss,
    validation_loss,
)
from recycle_distill.training.losses.common import cut_frames, cut_mask, loss_dtype


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


def _err(call, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        call()
    assert str(caught.value) == message


def test_every_shape_error_names_the_argument_and_shapes():
    from recycle_distill.training.losses import hint_loss
    from recycle_distill.training.losses.hints import layer_mse
    from recycle_distill.training.losses.star import gram_distance, temporal_gram

    s, t = _layers(0), _layers(1)
    _err(lambda: masking_distillation_loss([], [], [], _mask(), []), "student_layers is empty")
    _err(lambda: masking_distillation_loss([s[0], torch.zeros(2, 5, 4)], t[:2], t[:2], _mask(), []),
         "student_layers[1] has shape (2, 5, 4), expected (B, T, D) = (2, 6, D)")
    _err(lambda: masking_distillation_loss([s[0], torch.zeros(2, 6)], t[:2], t[:2], _mask(), []),
         "student_layers[1] has shape (2, 6), expected (B, T, D) = (2, 6, D)")
    _err(lambda: masking_distillation_loss(s, t[:2], t, _mask(), []),
         "teacher_unmasked_layers has 2 entries, student_layers has 3: map them first")
    _err(lambda: masking_distillation_loss(s, t, [t[0], t[1], torch.zeros(6, 2, 4)], _mask(), []),
         "teacher_masked_layers[2] has shape (6, 2, 4); the student's is (2, 6, 4) (is it time-major? transpose to (B, T, D))")
    _err(lambda: masking_distillation_loss(s, t, [t[0], t[1], torch.zeros(2, 5, 4)], _mask(), []),
         "teacher_masked_layers[2] has 5 frames, fewer than the student's 6")
    _err(lambda: masking_distillation_loss(s, t, t, _mask(), [2]),
         "hint_layers holds 2, the last layer: it is always the reconstruction layer")
    _err(lambda: masking_distillation_loss(s, t, t, _mask(), [3]), "hint_layers holds 3; expected 0-based indices in [0, 2)")
    _err(lambda: masking_distillation_loss(s, t, t, _mask(), [-1]), "hint_layers holds -1; expected 0-based indices in [0, 2)")
    _err(lambda: masking_distillation_loss(s, t, t, _mask(), [1, 1]), "hint_layers has repeats: [1, 1]")
    _err(lambda: temporal_gram(s[0], normalization="l2"),
         "normalization must be one of ('none', 'dim', 'cosine'), got 'l2'")
    _err(lambda: temporal_gram(s[0], torch.zeros(2, 6, 5)), "expected two (B, T, D) tensors of one shape, got (2, 6, 4) and (2, 6, 5)")
    _err(lambda: temporal_gram(torch.zeros(6, 4)), "expected two (B, T, D) tensors of one shape, got (6, 4) and (6, 4)")
    _err(lambda: gram_distance(torch.zeros(2, 6, 6), torch.zeros(2, 6, 6), torch.ones(2, 6, dtype=torch.bool), "max"),
         "reduction must be one of ('mean', 'sum'), got 'max'")
    _err(lambda: star_loss(s, t), "student_inputs is required for the intra-layer term (pass intra_weight=0 to skip it)")
    _err(lambda: star_loss(s, t, student_inputs=s[0]), "teacher_inputs is required for the intra-layer term (pass intra_weight=0 to skip it)")
    _err(lambda: star_loss(s, t, student_inputs=s[:2], teacher_inputs=t[0]),
         "student_inputs has 2 entries, expected one per layer (3)")
    _err(lambda: star_loss(s, t, student_inputs=s[0], teacher_inputs=[t[0], t[1], torch.zeros(2, 5, 4)]),
         "teacher_inputs[2] has 5 frames, fewer than the student's 6")
    _err(lambda: star_loss(s, t[:2], intra_weight=0), "teacher_layers has 2 entries, student_layers 3: map them first")
    _err(lambda: star_loss(s, [t[0], t[1], torch.zeros(2, 5, 4)], intra_weight=0), "teacher_layers[2] has 5 frames, fewer than the student's 6")
    _err(lambda: star_loss(s, [t[0], t[1], torch.zeros(3, 6, 4)], intra_weight=0),
         "teacher_layers[2] has shape (3, 6, 4), expected (B, T, D)")
    _err(lambda: star_loss(s, [t[0], t[1], torch.zeros(2, 6)], intra_weight=0), "teacher_layers[2] has shape (2, 6), expected (B, T, D)")
    _err(lambda: star_loss(s, t, intra_weight=0, padding_mask=torch.zeros(2, 6)), "padding_mask: expected a bool mask, got torch.float32")
    _err(lambda: layer_mse(torch.zeros(2, 6), torch.zeros(2, 6)), "pred: expected (B, T, D), got shape (2, 6)")
    _err(lambda: layer_mse(s[0], torch.zeros(2, 6, 5)), "target has shape (2, 6, 5), pred (2, 6, 4) (time-major? transpose)")
    _err(lambda: hint_loss([]), "pairs is empty")
    _err(lambda: fithubert_hint_loss(s, t[:2]), "3 student heads but 2 teacher layers: map them first")
    _err(lambda: masking_distillation_loss(s, [t[0], t[1], torch.zeros(2, 6, 4)[:, :5]], t, _mask(), []),
         "teacher_unmasked_layers[2] has 5 frames, fewer than the student's 6")


def test_a_single_layer_is_all_reconstruction():
    s, t = _layers(0, count=1), _layers(1, count=1)
    total, terms = masking_distillation_loss(s, t, t, _mask(), [])
    assert float(terms["hint_loss"]) == 0.0
    torch.testing.assert_close(total, ((s[0] - t[0]).square().mean()), rtol=1e-6, atol=0)


def test_the_reduction_dtype_follows_every_input():
    """float64 anywhere (student, either teacher run) makes the whole loss float64."""
    for position in range(3):
        lists = [_layers(seed) for seed in range(3)]
        lists[position] = [layer.double() for layer in lists[position]]
        total, _ = masking_distillation_loss(*lists, _mask(), [0])
        assert total.dtype == torch.float64, position
    s, t = _layers(0), _layers(1)
    assert star_loss([x.double() for x in s], t, intra_weight=0)[0].dtype == torch.float64
    assert star_loss(s, [x.double() for x in t], intra_weight=0)[0].dtype == torch.float64
    assert validation_loss([x.double() for x in s], t, [0])[0].dtype == torch.float64
    assert validation_loss(s, [x.double() for x in t], [0])[0].dtype == torch.float64


def test_one_valid_frame_counts_once():
    """An utterance with a single valid frame: divided by 1 frame (masking) and 1 pair (STaR)."""
    s, t = _layers(0, count=1, shape=(1, 3, 4)), _layers(1, count=1, shape=(1, 3, 4))
    padding = torch.tensor([[False, True, True]])
    total, _ = masking_distillation_loss(s, t, t, torch.zeros(1, 3, dtype=torch.bool), [], padding_mask=padding)
    torch.testing.assert_close(total, (s[0][0, 0] - t[0][0, 0]).square().mean(), rtol=1e-6, atol=0)
    total, _ = star_loss(s, t, intra_weight=0, padding_mask=padding, normalization="none")
    expected = (s[0][0, 0] @ s[0][0, 0] - t[0][0, 0] @ t[0][0, 0]).square()
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=0)


def test_validation_loss_without_hints_and_its_shape_errors():
    s, t = _layers(0), _layers(1)
    total, terms = validation_loss(s, t, [])
    assert float(terms["hint_loss"]) == 0.0 and terms["hint_loss"].shape == ()
    torch.testing.assert_close(total, terms["rec_loss"])
    _err(lambda: validation_loss(s, t[:2], []), "teacher_layers has 2 entries, student_layers has 3: map them first")
    _err(lambda: fithubert_hint_loss(s, [t[0], t[1], torch.zeros(2, 5, 4)]), "target has 5 frames, fewer than the student's 6")
    _err(lambda: fithubert_hint_loss(s, t, padding_mask=torch.zeros(2, 6)), "padding_mask: expected a bool mask, got torch.float32")
