"""The distillation objectives against the original trainer's recorded numbers and direct formulas.

The loss fixtures (``tests/data/loss``, trimmed by ``tools/trim_loss_fixtures.py``) are one
training step of the original ARMHuBERT/MaskHuBERT trainer: student weights, the padded batch,
the teacher's mask, both teacher runs' layer outputs (time-major), every loss term and every
student parameter's gradient, plus the validation loss.
"""

from __future__ import annotations

import functools
import logging
import pathlib

import pytest
import torch

import recycle_distill
from recycle_distill.students.key_layout import to_released_key
from recycle_distill.training.losses import (
    MASKING_TERMS,
    STAR_NORMALIZATIONS,
    fithubert_hint_loss,
    hint_loss,
    masking_distillation_loss,
    star_loss,
    validation_loss,
)

logger = logging.getLogger(__name__)

LOSS_DATA = pathlib.Path(__file__).parents[1] / "data" / "loss"
TRAIN_FIXTURES = [
    "loss_tiny_armhubert",
    "loss_tiny_armhubert_proj",
    "loss_tiny_maskhubert",
    "loss_tiny_maskhubert_proj",
]
DROPOUT_KEYS = ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "encoder_layerdrop")
GRAD_RTOL = 1e-5
ZERO_GRAD_SUFFIX = "self_attn.k_proj.bias"


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict:
    return torch.load(LOSS_DATA / f"{name}.pt", weights_only=True)


def build(fixture: dict) -> torch.nn.Module:
    """The fixture's student with its weights; train mode when every dropout is 0, as recorded."""
    config = dict(fixture["config"])
    family = "armhubert" if config.get("reuse_pattern") not in (None, "", "None") else "maskhubert"
    # The original ARMHuBERT trainer pairs its reuse layers with the batched reference path.
    overrides = {"reference_batched_reuse": True} if family == "armhubert" else {}
    model = recycle_distill.build_student(config, family=family, **overrides)
    model.load_state_dict(fixture["state_dict"], strict=True)
    dropouts_off = all(float(config.get(key, 0.0)) == 0.0 for key in DROPOUT_KEYS)
    model.train(dropouts_off)
    return model


def batch_first(layers: list[torch.Tensor]) -> list[torch.Tensor]:
    """The recorded teacher layer outputs are fairseq's (T, B, D)."""
    return [layer.transpose(0, 1) for layer in layers]


def teacher_for_student(layers: list[torch.Tensor], num_student_layers: int) -> list[torch.Tensor]:
    """The original pairs projection l with teacher layer l (``layer_results[l]``; last with last)."""
    assert len(layers) == num_student_layers, "the tiny teacher and students both have 4 layers"
    return batch_first(layers)


def weights(fixture: dict) -> dict[str, float]:
    return {
        "hint_weight": fixture["train_cfg"]["random_layer_weight"],
        "last_weight": fixture["train_cfg"]["rec_loss_weight"],
    }


def student_frames(model: torch.nn.Module, fixture: dict) -> int:
    frames = int(model.frame_lengths(torch.tensor([fixture["x"].shape[1]]))[0])
    return frames - frames % model.config.crop_seq_to_multiple


def rel_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.double()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


# ---------------------------------------------------------------- reference fixtures
@pytest.mark.parametrize("name", TRAIN_FIXTURES)
def test_masking_loss_on_recorded_outputs(name: str) -> None:
    """The function alone, on the recorded student projections: agrees to float rounding."""
    fixture = load(name)
    predictions = fixture["student"]["projections"]
    total, terms = masking_distillation_loss(
        predictions,
        teacher_for_student(fixture["teacher_unmasked"]["layer_results_x"], len(predictions)),
        teacher_for_student(fixture["teacher_masked"]["layer_results_x"], len(predictions)),
        fixture["mask_indices"],
        fixture["rand_l"],
        **weights(fixture),
    )
    assert set(terms) == set(MASKING_TERMS)
    for key in MASKING_TERMS:
        torch.testing.assert_close(terms[key], fixture["losses"][key], rtol=1e-6, atol=0)
    torch.testing.assert_close(total, fixture["total_loss"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", TRAIN_FIXTURES)
def test_training_step_matches_reference(name: str) -> None:
    """Our student + our loss reproduce the original step: every term and every gradient."""
    fixture = load(name)
    model = build(fixture)
    frames = student_frames(model, fixture)
    lengths = (~fixture["padding_mask"]).sum(dim=1)
    out = model(fixture["x"], lengths, fixture["mask_indices"][:, :frames])
    total, terms = masking_distillation_loss(
        out.projections,
        teacher_for_student(fixture["teacher_unmasked"]["layer_results_x"], len(out.projections)),
        teacher_for_student(fixture["teacher_masked"]["layer_results_x"], len(out.projections)),
        fixture["mask_indices"],
        fixture["rand_l"],
        **weights(fixture),
    )
    for key in MASKING_TERMS:
        torch.testing.assert_close(terms[key], fixture["losses"][key], rtol=1e-5, atol=0)
    torch.testing.assert_close(total, fixture["total_loss"], rtol=1e-5, atol=0)
    term_diff = max(rel_diff(terms[key], fixture["losses"][key]) for key in MASKING_TERMS)
    total_diff = rel_diff(total, fixture["total_loss"])
    logger.info("%s: worst loss-term relative diff %.3g, total %.3g", name, term_diff, total_diff)

    total.backward()
    worst = 0.0
    # Gradients were recorded under the released key names (docs/students.md, "Key layout").
    named = {to_released_key(name): param for name, param in model.named_parameters()}
    assert set(named) == set(fixture["grads"]), "every recorded gradient has a parameter of the same name"
    largest = max(float(g.abs().max()) for g in fixture["grads"].values())
    for param_name, param in named.items():
        recorded = fixture["grads"][param_name]
        assert param.grad is not None, param_name
        if param_name.endswith(ZERO_GRAD_SUFFIX):
            # Softmax is shift-invariant, so the key bias has a zero gradient in exact arithmetic:
            # both runs hold rounding noise (~1e-12) there, which no relative bound can compare.
            assert float(recorded.abs().max()) <= 1e-8 * largest, param_name
            assert float(param.grad.abs().max()) <= 1e-8 * largest, param_name
            continue
        scale = float(recorded.abs().max())
        diff = float((param.grad - recorded).abs().max())
        assert diff <= GRAD_RTOL * scale, f"{param_name}: max |diff| {diff:.3g} > {GRAD_RTOL} x {scale:.3g}"
        worst = max(worst, diff / scale)
    logger.info("%s: worst gradient diff / max|grad| = %.3g", name, worst)


@pytest.mark.parametrize("name", [*TRAIN_FIXTURES, "loss_extra_narrow_tiny_armhubert"])
def test_validation_loss_matches_reference(name: str) -> None:
    fixture = load(name)
    predictions = fixture["val"]["student"]["projections"]
    teacher = teacher_for_student(fixture["val"]["teacher"]["layer_results_x"], len(predictions))
    recorded, _ = validation_loss(predictions, teacher, fixture["rand_l"], **weights(fixture))
    torch.testing.assert_close(recorded, fixture["val"]["v_loss"], rtol=1e-6, atol=0)

    model = build(fixture).eval()
    with torch.no_grad():
        out = model(fixture["x"], (~fixture["padding_mask"]).sum(dim=1))
    # The narrow student has 48 frames against the teacher's 49: the first 48 are kept.
    assert out.projections[0].shape[1] == student_frames(model, fixture)
    ours, terms = validation_loss(out.projections, teacher, fixture["rand_l"], **weights(fixture))
    torch.testing.assert_close(ours, fixture["val"]["v_loss"], rtol=1e-5, atol=0)
    logger.info(
        "%s: v_loss relative diff %.3g on the recorded outputs, %.3g on ours",
        name,
        rel_diff(recorded, fixture["val"]["v_loss"]),
        rel_diff(ours, fixture["val"]["v_loss"]),
    )
    torch.testing.assert_close(terms["hint_loss"] + terms["rec_loss"], ours)


# ---------------------------------------------------------------- masking loss, direct formula
def _random_layers(seed: int, batch: int = 3, frames: int = 7, dim: int = 5, layers: int = 4, extra: int = 0):
    generator = torch.Generator().manual_seed(seed)
    def draw(num_frames: int) -> list[torch.Tensor]:
        return [torch.randn(batch, num_frames, dim, generator=generator, dtype=torch.float64) for _ in range(layers)]

    student, unmasked, masked = draw(frames), draw(frames + extra), draw(frames + extra)
    mask = torch.rand(batch, frames + extra, generator=generator) < 0.5
    return student, unmasked, masked, mask


def _original_formula(student, unmasked, masked, mask, hints):
    """train.py's calculate_loss: stacked layers, boolean indexing, sums / B / T."""
    pred = torch.stack([student[l] for l in hints] + [student[-1]], dim=1)
    target = torch.stack([unmasked[l] for l in hints] + [unmasked[-1]], dim=1).narrow(2, 0, pred.shape[2])
    m_target = torch.stack([masked[l] for l in hints] + [masked[-1]], dim=1).narrow(2, 0, pred.shape[2])
    batch, layers, frames, _ = target.shape
    mask = mask[:, :frames]
    mask_ = mask.unsqueeze(1).repeat_interleave(layers - 1, dim=1)

    def term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(a, b, reduction="none").mean(-1).sum() / batch / frames

    return {
        "mask_hint_loss": term(pred[:, :-1][mask_], target[:, :-1][mask_]),
        "unmask_hint_loss": term(pred[:, :-1][~mask_], m_target[:, :-1][~mask_]),
        "mask_rec_loss": term(pred[:, -1][mask], target[:, -1][mask]),
        "unmask_rec_loss": term(pred[:, -1][~mask], m_target[:, -1][~mask]),
    }


@pytest.mark.parametrize("hints", [[0, 1, 2], [1], []])
def test_masking_loss_matches_original_formula(hints: list[int]) -> None:
    student, unmasked, masked, mask = _random_layers(0, extra=2)
    total, terms = masking_distillation_loss(student, unmasked, masked, mask, hints, hint_weight=0.3, last_weight=2.0)
    expected = _original_formula(student, unmasked, masked, mask, hints) if hints else None
    if expected is not None:
        for key, value in expected.items():
            torch.testing.assert_close(terms[key], value, rtol=1e-12, atol=0)
    torch.testing.assert_close(terms["hint_loss"], 0.3 * (terms["mask_hint_loss"] + terms["unmask_hint_loss"]))
    torch.testing.assert_close(total, terms["hint_loss"] + 2.0 * (terms["mask_rec_loss"] + terms["unmask_rec_loss"]))


def test_masking_loss_excluding_padding() -> None:
    student, unmasked, masked, mask = _random_layers(1)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 5:] = True
    padding[2, 2:] = True
    # No padded frame: identical to the reference mode.
    reference, _ = masking_distillation_loss(student, unmasked, masked, mask, [0, 2])
    unpadded, _ = masking_distillation_loss(
        student, unmasked, masked, mask, [0, 2], padding_mask=torch.zeros_like(padding)
    )
    torch.testing.assert_close(unpadded, reference, rtol=1e-12, atol=0)

    total, terms = masking_distillation_loss(student, unmasked, masked, mask, [0, 2], padding_mask=padding)
    valid = ~padding
    count = valid.sum()
    for key, layers in (("mask_hint_loss", [0, 2]), ("mask_rec_loss", [3])):
        frames = mask & valid
        expected = sum(((student[l] - unmasked[l]) ** 2).mean(-1)[frames].sum() for l in layers) / count
        torch.testing.assert_close(terms[key], expected, rtol=1e-12, atol=0)
    for key, layers in (("unmask_hint_loss", [0, 2]), ("unmask_rec_loss", [3])):
        frames = ~mask & valid
        expected = sum(((student[l] - masked[l]) ** 2).mean(-1)[frames].sum() for l in layers) / count
        torch.testing.assert_close(terms[key], expected, rtol=1e-12, atol=0)

    # Padded frames do not matter, whatever they hold.
    noisy = [s.masked_fill(padding.unsqueeze(-1), 1e6) for s in student]
    again, _ = masking_distillation_loss(noisy, unmasked, masked, mask, [0, 2], padding_mask=padding)
    torch.testing.assert_close(again, total, rtol=1e-12, atol=0)


def test_masking_loss_rejects_bad_arguments() -> None:
    student, unmasked, masked, mask = _random_layers(2)
    with pytest.raises(ValueError, match="last layer"):
        masking_distillation_loss(student, unmasked, masked, mask, [0, 3])
    with pytest.raises(ValueError):
        masking_distillation_loss(student, unmasked, masked, mask, [-1])
    with pytest.raises(ValueError, match="fewer"):
        masking_distillation_loss(student, [u[:, :5] for u in unmasked], masked, mask, [0])
    with pytest.raises(ValueError, match="map them"):
        masking_distillation_loss(student, unmasked[:3], masked, mask, [0])
    with pytest.raises(ValueError, match="time-major"):
        masking_distillation_loss(student, [u.transpose(0, 1) for u in unmasked], masked, mask, [0])
    with pytest.raises(ValueError, match="last layer"):
        validation_loss(student, unmasked, [3])


def test_validation_loss_excluding_padding() -> None:
    student, teacher, _, _ = _random_layers(3, extra=1)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 4:] = True
    total, terms = validation_loss(student, teacher, [1], hint_weight=0.1, last_weight=1.0, padding_mask=padding)
    valid = ~padding
    per_layer = [((s - t[:, :7]) ** 2)[valid].mean() for s, t in zip(student, teacher)]
    torch.testing.assert_close(terms["hint_loss"], 0.1 * per_layer[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(total, 0.1 * per_layer[1] + per_layer[3], rtol=1e-12, atol=0)


# ---------------------------------------------------------------- STaR
def _star_reference(students, teachers, s_inputs, t_inputs, lengths, normalization, reduction):
    """The PAPERS.md formulas, one utterance at a time on its valid frames, with einsum."""

    def gram(a, b):
        if normalization == "cosine":
            a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
        g = torch.einsum("id,jd->ij", a, b)
        return g / a.shape[-1] if normalization == "dim" else g

    def distance(gs, gt):
        value = ((gs - gt) ** 2).sum()
        return value / gs.numel() if reduction == "mean" else value

    layerwise, intra = 0.0, 0.0
    batch = students[0].shape[0]
    scale = 1.0 / batch if reduction == "mean" else 1.0
    for b, n in enumerate(lengths):
        for s, t, si, ti in zip(students, teachers, s_inputs, t_inputs):
            layerwise = layerwise + scale * distance(gram(s[b, :n], s[b, :n]), gram(t[b, :n], t[b, :n]))
            intra = intra + scale * distance(gram(si[b, :n], s[b, :n]), gram(ti[b, :n], t[b, :n]))
    return layerwise, intra


@pytest.mark.parametrize("normalization", STAR_NORMALIZATIONS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_star_loss_matches_einsum(normalization: str, reduction: str) -> None:
    generator = torch.Generator().manual_seed(4)
    batch, frames, layers, d_s, d_t = 3, 9, 3, 4, 6
    students = [torch.randn(batch, frames, d_s, generator=generator, dtype=torch.float64) for _ in range(layers)]
    teachers = [torch.randn(batch, frames + 2, d_t, generator=generator, dtype=torch.float64) for _ in range(layers)]
    s_input = torch.randn(batch, frames, d_s, generator=generator, dtype=torch.float64)
    t_input = torch.randn(batch, frames + 2, d_t, generator=generator, dtype=torch.float64)
    lengths = [9, 6, 3]
    padding = torch.arange(frames).unsqueeze(0) >= torch.tensor(lengths).unsqueeze(1)

    total, terms = star_loss(
        students, teachers, s_input, t_input, padding, normalization=normalization, reduction=reduction
    )
    expected_layerwise, expected_intra = _star_reference(
        students, teachers, [s_input, *students[:-1]], [t_input, *teachers[:-1]], lengths, normalization, reduction
    )
    torch.testing.assert_close(terms["layerwise_loss"], expected_layerwise, rtol=1e-10, atol=0)
    torch.testing.assert_close(terms["intra_layer_loss"], expected_intra, rtol=1e-10, atol=0)
    torch.testing.assert_close(total, expected_layerwise + expected_intra, rtol=1e-10, atol=0)

    # Per-layer input lists give the same thing; padded frames do not matter.
    as_lists, _ = star_loss(
        [s.masked_fill(padding.unsqueeze(-1), 1e3) for s in students],
        teachers,
        [s_input, *students[:-1]],
        [t_input, *teachers[:-1]],
        padding,
        normalization=normalization,
        reduction=reduction,
    )
    torch.testing.assert_close(as_lists, total, rtol=1e-10, atol=0)


def test_star_loss_without_padding_and_gradients() -> None:
    generator = torch.Generator().manual_seed(5)
    students = [torch.randn(2, 5, 3, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    teachers = [torch.randn(2, 5, 4, generator=generator, dtype=torch.float64) for _ in range(2)]
    s_input = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    t_input = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    total, terms = star_loss(students, teachers, s_input, t_input)  # the defaults: "dim", "mean"
    layerwise, intra = _star_reference(
        students, teachers, [s_input, *students[:-1]], [t_input, *teachers[:-1]], [5, 5], "dim", "mean"
    )
    torch.testing.assert_close(total, layerwise + intra, rtol=1e-10, atol=0)
    assert torch.autograd.gradcheck(
        lambda a, b, c: star_loss([a, b], teachers, c, t_input, normalization="cosine")[0], (*students, s_input)
    )
    layer_only, terms = star_loss(students, teachers, intra_weight=0.0)
    torch.testing.assert_close(layer_only, layerwise, rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="intra"):
        star_loss(students, teachers)
    with pytest.raises(ValueError, match="normalization"):
        star_loss(students, teachers, s_input, t_input, normalization="l2")


# ---------------------------------------------------------------- FitHuBERT hints
def test_hint_loss_by_hand() -> None:
    # One utterance, two frames, two channels; errors chosen so each MSE is easy to read.
    student = [torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]) for _ in range(3)]
    teacher = [
        torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]]),  # exact (a third teacher frame is cut): 0
        torch.tensor([[[2.0, 2.0], [3.0, 4.0]]]),  # one error of 1 over 4 entries: 0.25
        torch.tensor([[[1.0, 0.0], [1.0, 4.0]]]),  # errors 2 and 2: (4 + 4) / 4 = 2
    ]
    total, terms = fithubert_hint_loss(student, teacher)
    assert [float(terms[f"layer_{i}_loss"]) for i in range(3)] == [0.0, 0.25, 2.0]
    assert float(total) == pytest.approx(0.1 * 0.0 + 0.1 * 0.25 + 1.0 * 2.0)

    general, _ = hint_loss([(student[1], teacher[1], 3.0), (student[2], teacher[2], 0.5)])
    assert float(general) == pytest.approx(3.0 * 0.25 + 0.5 * 2.0)

    # The second frame padded: only the first frame's entries count.
    padding = torch.tensor([[False, True]])
    _, padded = fithubert_hint_loss(student, teacher, padding_mask=padding)
    assert [float(padded[f"layer_{i}_loss"]) for i in range(3)] == [0.0, 0.5, 2.0]
