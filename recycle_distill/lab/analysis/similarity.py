"""How alike two sets of frame representations are: linear CKA and mean frame cosine.

Both take frames pooled over utterances as rows: ``x`` (N, D1) and ``y`` (N, D2) describe the
same N frames. Linear CKA (Kornblith et al., 2019) compares the two frame-by-frame similarity
structures, so it is invariant to rotations and isotropic scaling of either side and works
across widths; the cosine compares the vectors themselves and needs D1 == D2.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_cka", "mean_frame_cosine"]


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"expected (N, D) frame matrices, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} frames but y has {y.shape[0]}: pair the same frames")
    if x.shape[0] < 2:
        raise ValueError("need at least 2 frames")


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA in [0, 1] of (N, D1) and (N, D2) frame matrices.

    ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc, Yc, computed
    in float64 through the D x D Gram matrices (cheap for N >> D).
    """
    _check_pair(x, y)
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(x.T @ y) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if float(norm) == 0.0:
        raise ValueError("a representation is constant over all frames: CKA is undefined")
    return float(cross / norm)


def mean_frame_cosine(x: Tensor, y: Tensor) -> float:
    """Mean over the N frames of cos(x_n, y_n); (N, D) each, same D."""
    _check_pair(x, y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"cosine needs equal widths, got {x.shape[1]} and {y.shape[1]}")
    return float(torch.nn.functional.cosine_similarity(x.to(torch.float64), y.to(torch.float64), dim=1).mean())
