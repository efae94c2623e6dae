"""HieraDist's ACD and LRD losses against the original code's recorded outputs
(``tests/data/cif/hieradist_*.pt``; semantics in ``docs/cif.md``, sections "ACD" and "LRD")."""

from __future__ import annotations

import math
import pathlib

import pytest
import torch
import torch.nn.functional as F

from recycle_distill.downstreams.cif_asr.hieradist import (
    acoustic_contrastive_loss,
    linguistic_regression_loss,
    num_acd_negatives,
)

CIF_DATA = pathlib.Path(__file__).parents[1] / "data" / "cif"
FIXTURES = sorted(CIF_DATA.glob("hieradist_*.pt"))


def _cases(kind: str):
    for path in FIXTURES:
        for case in torch.load(path, weights_only=True)[kind]:
            yield pytest.param(case, id=f"{path.stem}:{case['name']}")


def test_fixtures_cover_both_negative_counts():
    used = {(int((~c["padding_mask"]).sum()), c["num_negatives_used"]) for p in FIXTURES
            for c in torch.load(p, weights_only=True)["acd"]}
    assert any(n > 700 and k == 700 for n, k in used) and any(n <= 700 and k == math.floor(0.8 * n) for n, k in used)


@pytest.mark.parametrize("case", list(_cases("acd")))
def test_acd_reproduces_the_original(case):
    valid = ~case["padding_mask"]
    loss, accuracy = acoustic_contrastive_loss(
        case["student"][valid], case["teacher"][valid], num_negatives=case["num_negatives"],
        temperature=case["temperature"], remove_self=case["remove_self"],
        negative_indices=case["negative_indices"].long())
    torch.testing.assert_close(loss, case["loss_sum"], rtol=1e-5, atol=0)
    assert num_acd_negatives(int(valid.sum()), case["num_negatives"]) == case["num_negatives_used"]
    if case["accuracy_robust"]:
        assert accuracy == pytest.approx(case["accuracy"], abs=1e-6)


@pytest.mark.parametrize("case", list(_cases("lrd")))
def test_lrd_reproduces_the_original(case):
    loss = linguistic_regression_loss(case["student"], case["teacher"], case["padding_mask"])
    torch.testing.assert_close(loss, case["loss_sum"], rtol=1e-5, atol=0)


def test_acd_by_hand():
    # Two orthogonal rows, one negative each (floor(0.8 * 2) = 1), the other row's teacher.
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    loss, accuracy = acoustic_contrastive_loss(student, teacher, temperature=0.5,
                                               negative_indices=torch.tensor([[1], [0]]))
    # Each row: logits [1, 0] / 0.5 -> CE = log(1 + exp(-2)).
    assert loss.item() == pytest.approx(2 * math.log1p(math.exp(-2.0)), rel=1e-6)
    assert accuracy == 1.0
    # Its own index as the negative: masked out, so only the positive remains (loss 0).
    loss, _ = acoustic_contrastive_loss(student, teacher, negative_indices=torch.tensor([[0], [1]]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_acd_sampling_draws_distinct_indices():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(30, 8), torch.randn(30, 8)
    loss, accuracy = acoustic_contrastive_loss(student, teacher, generator=gen)
    assert torch.isfinite(loss) and 0.0 <= accuracy <= 1.0
    from recycle_distill.downstreams.cif_asr.hieradist import _sample_negatives
    drawn = _sample_negatives(30, 24, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert drawn.shape == (30, 24)
    assert all(len(set(row.tolist())) == 24 for row in drawn)
    assert int(drawn.min()) >= 0 and int(drawn.max()) < 30


def test_acd_fewer_than_two_rows_is_skipped_not_a_crash():
    student = torch.randn(1, 4, requires_grad=True)
    loss, accuracy = acoustic_contrastive_loss(student, torch.randn(1, 4))
    assert loss.item() == 0.0 and math.isnan(accuracy)
    loss.backward()
    assert student.grad is not None


def test_acd_matches_an_independent_formula():
    gen = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(12, 6, generator=gen), torch.randn(12, 6, generator=gen)
    idx = torch.stack([torch.randperm(12, generator=gen)[:9] for _ in range(12)])
    loss, _ = acoustic_contrastive_loss(student, teacher, negative_indices=idx, temperature=0.1)
    expected = 0.0
    for n in range(12):
        cos = [F.cosine_similarity(student[n], teacher[n], dim=0)]
        cos += [F.cosine_similarity(student[n], teacher[j], dim=0) if j != n else torch.tensor(-1e9) for j in idx[n].tolist()]
        logits = torch.stack(cos) / 0.1
        expected += float(torch.logsumexp(logits, 0) - logits[0])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_lrd_ignores_padded_rows_and_sums():
    student, teacher = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    pad = torch.tensor([[False, False, True], [False, True, True]])
    teacher[pad] = 1e6
    assert linguistic_regression_loss(student, teacher, pad).item() == pytest.approx(3 * 4)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(3, 5\)"):
        acoustic_contrastive_loss(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="padding_mask"):
        linguistic_regression_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.bool))


# ---------------------------------------------------------------- contracts (mutation testing)
def test_negative_count_boundary():
    assert num_acd_negatives(700) == 560 and num_acd_negatives(701) == 700
    assert num_acd_negatives(10, num_negatives=5) == 5 and num_acd_negatives(5, num_negatives=5) == 4


def test_defaults_are_700_negatives_and_temperature_0_02():
    gen = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(701, 4, generator=gen), torch.randn(701, 4, generator=gen)
    idx = torch.stack([torch.randperm(701, generator=gen)[:700] for _ in range(701)])
    default, _ = acoustic_contrastive_loss(student, teacher, negative_indices=idx)
    explicit, _ = acoustic_contrastive_loss(student, teacher, num_negatives=700, temperature=0.02, negative_indices=idx)
    assert default.item() == explicit.item()
    other, _ = acoustic_contrastive_loss(student, teacher, temperature=1.0, negative_indices=idx)
    assert other.item() != pytest.approx(default.item(), rel=1e-3)


def test_num_negatives_is_passed_through():
    student, teacher = torch.randn(10, 4), torch.randn(10, 4)
    idx = torch.stack([torch.roll(torch.arange(10), -(n + 1))[:5] for n in range(10)])
    loss, _ = acoustic_contrastive_loss(student, teacher, num_negatives=5, negative_indices=idx)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"^negative_indices must be \(N, K\) = \(10, 8\), got \(10, 5\)$"):
        acoustic_contrastive_loss(student, teacher, negative_indices=idx)


def test_sampling_follows_the_generator_only():
    from recycle_distill.downstreams.cif_asr.hieradist import _sample_negatives

    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the global generator must not matter
        draws.append(_sample_negatives(12, 9, torch.device("cpu"), torch.Generator().manual_seed(7)))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], _sample_negatives(12, 9, torch.device("cpu"), torch.Generator().manual_seed(8)))
    torch.manual_seed(3)
    unseeded = _sample_negatives(12, 9, torch.device("cpu"), None)
    assert unseeded.shape == (12, 9) and all(len(set(row.tolist())) == 9 for row in unseeded)
    loss, accuracy = acoustic_contrastive_loss(torch.randn(12, 4), torch.randn(12, 4))  # no generator
    assert torch.isfinite(loss) and 0.0 <= accuracy <= 1.0


def test_lrd_takes_integer_masks_and_keeps_the_student_dtype():
    student = torch.zeros(1, 3, 2)
    teacher = torch.ones(1, 3, 2, dtype=torch.float64)
    loss = linguistic_regression_loss(student, teacher, torch.tensor([[0, 0, 1]]))
    assert loss.item() == 4.0 and loss.dtype == torch.float32


def test_acd_sampling_uses_the_given_generator():
    student, teacher = torch.randn(12, 4), torch.randn(12, 4)
    losses = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        losses.append(acoustic_contrastive_loss(student, teacher, generator=torch.Generator().manual_seed(5))[0].item())
    assert losses[0] == losses[1]


def test_acd_norm_floor_and_teacher_dtype():
    # A student row of norm 1e-8 is divided by the 1e-6 floor, not blown up to unit length.
    student = torch.tensor([[1e-8, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # cast to the student's dtype
    loss, _ = acoustic_contrastive_loss(student, teacher, temperature=1.0, negative_indices=torch.tensor([[1], [0]]))
    row0 = math.log(math.exp(0.01) + math.exp(0.0)) - 0.01  # cosines 1e-8 / 1e-6 = 0.01 and 0
    row1 = math.log(math.exp(1.0) + math.exp(0.0)) - 1.0
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(row0 + row1, rel=1e-5)
    # The same floor on the teacher side.
    loss, _ = acoustic_contrastive_loss(teacher.float(), student.double(), temperature=1.0,
                                        negative_indices=torch.tensor([[1], [0]]))
    assert loss.item() == pytest.approx(row0 + row1, rel=1e-5)
