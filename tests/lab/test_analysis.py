"""recycle_distill.lab.analysis: linear CKA, frame cosine and k-means on inputs with known answers."""

import math

import pytest
import torch

from recycle_distill.lab.analysis import assign_clusters, kmeans, linear_cka, mean_frame_cosine


def test_cka_is_one_under_rotation_scale_and_shift():
    torch.manual_seed(0)
    x = torch.randn(500, 16)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    assert linear_cka(x, 3.0 * x @ rotation + 7.0) == pytest.approx(1.0, abs=1e-9)


def test_cka_of_independent_noise_is_small_and_symmetric():
    torch.manual_seed(0)
    x, y = torch.randn(4000, 8), torch.randn(4000, 12)
    assert linear_cka(x, y) < 0.02
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)


def test_cka_matches_the_hsic_formula_on_a_small_case():
    # Written out with the n x n kernel matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).
    torch.manual_seed(1)
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64)
    y = y + x[:, :3]
    h = torch.eye(30, dtype=torch.float64) - 1.0 / 30
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    expected = float((k * l).sum() / torch.sqrt((k * k).sum() * (l * l).sum()))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)


def test_cka_rejects_mismatched_or_constant_inputs():
    with pytest.raises(ValueError, match="x has 4 frames but y has 5: pair the same frames"):
        linear_cka(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="a representation is constant over all frames"):
        linear_cka(torch.ones(6, 2), torch.randn(6, 2))


def test_mean_frame_cosine_values():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert mean_frame_cosine(x, 5 * x) == pytest.approx(1.0)
    assert mean_frame_cosine(x, -x) == pytest.approx(-1.0)
    assert mean_frame_cosine(x, torch.tensor([[0.0, 1.0], [0.0, 1.0]])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cosine needs equal widths, got 2 and 3"):
        mean_frame_cosine(x, torch.zeros(2, 3))


def test_kmeans_finds_separated_blobs():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([centre + 0.3 * torch.randn(100, 2) for centre in centres])
    found = kmeans(points, 3, seed=0)
    # Every true centre has a found centroid within 0.2, and the labels split the blobs exactly.
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.2
    labels = assign_clusters(points, found)
    assert [len(set(labels[i * 100:(i + 1) * 100].tolist())) for i in range(3)] == [1, 1, 1]
    assert len(set(labels.tolist())) == 3


def test_kmeans_keeps_every_cluster_in_use():
    points = torch.tensor([[0.0], [0.0], [0.0], [1.0], [5.0]])
    labels = assign_clusters(points, kmeans(points, 3, seed=0))
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"k must be in \[1, N=5\], got 6"):
        kmeans(points, 6)
    assert not math.isnan(float(kmeans(points, 1).sum()))
