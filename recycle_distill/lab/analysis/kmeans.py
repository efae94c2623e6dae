"""Plain k-means in torch (k-means++ seeding, Lloyd iterations): HuBERT-style frame labels."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kmeans", "assign_clusters"]


def assign_clusters(x: Tensor, centroids: Tensor) -> Tensor:
    """(N,) index of the nearest of the (K, D) centroids for each row of (N, D) ``x``."""
    return torch.cdist(x, centroids).argmin(dim=1)


def kmeans(x: Tensor, k: int, iterations: int = 30, seed: int = 0) -> Tensor:
    """(K, D) centroids of the (N, D) rows of ``x``.

    k-means++ seeding (each new centre drawn with probability proportional to its squared
    distance from the chosen ones), then Lloyd iterations until no point changes cluster or
    ``iterations`` is reached. An emptied cluster is re-seeded at the point farthest from its
    centre, so all K centroids stay in use.
    """
    if x.dim() != 2:
        raise ValueError(f"expected (N, D) rows, got shape {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in [1, N={x.shape[0]}], got {k}")
    x = x.to(torch.float32)
    generator = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(x.shape[0], (1,), generator=generator)]
    closest = torch.cdist(x, centroids).squeeze(1) ** 2
    for _ in range(1, k):
        pick = torch.multinomial(closest + 1e-12, 1, generator=generator)
        centroids = torch.cat([centroids, x[pick]])
        closest = torch.minimum(closest, (torch.cdist(x, x[pick]).squeeze(1)) ** 2)
    labels = assign_clusters(x, centroids)
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        centroids = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            distances = (x - centroids[labels]).square().sum(dim=1)
            farthest = distances.argmax()
            centroids[empty] = x[farthest]
            labels[farthest] = empty  # so a second empty cluster picks another point
        new_labels = assign_clusters(x, centroids)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return centroids
