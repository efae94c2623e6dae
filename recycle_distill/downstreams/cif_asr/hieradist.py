"""HieraDist's two distillation losses from a pre-trained language model (``docs/cif.md``,
sections "ACD" and "LRD").

- Acoustic contrastive distillation (ACD): each CIF output, projected to the language model's
  width, should be closer (cosine) to its own token's language-model vector than to K other
  tokens' vectors drawn from the batch: an InfoNCE loss with temperature 0.02.
- Linguistic regression distillation (LRD): the decoder's projected pre-vocabulary state
  regresses the language-model vector of the same token (squared error, summed).

Both return sums over tokens; the recognizer divides the total loss by the token count.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["acoustic_contrastive_loss", "linguistic_regression_loss", "num_acd_negatives"]

# Norm floor of the cosine normalisation, and the logit given to a sampled self index.
_NORM_EPS = 1e-6
_MASKED_LOGIT = -1e9


def num_acd_negatives(num_rows: int, num_negatives: int = 700) -> int:
    """K: ``num_negatives`` when there are more rows than that, else floor(0.8 * rows)."""
    return num_negatives if num_rows > num_negatives else int(math.floor(0.8 * num_rows))


def _sample_negatives(num_rows: int, k: int, device: torch.device,
                      generator: Optional[torch.Generator]) -> torch.Tensor:
    """(N, K) indices, each row K distinct draws from 0..N-1 (the anchor's own index included)."""
    keys = torch.rand(num_rows, num_rows, generator=generator, device=device if generator is None else generator.device)
    return keys.topk(k, dim=1).indices.to(device)


def acoustic_contrastive_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    num_negatives: int = 700,
    temperature: float = 0.02,
    remove_self: bool = True,
    negative_indices: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, float]:
    """Cosine InfoNCE between student rows and their teacher rows, negatives from other teacher rows.

    Args:
        student: (N, D) projected CIF outputs of every valid token of the batch, row-major.
        teacher: (N, D) the language model's vectors of the same tokens.
        num_negatives: K when N > K; otherwise floor(0.8 N) negatives are drawn.
        temperature: the logits are cosines divided by this.
        remove_self: give a negative that is the anchor's own index the logit -1e9.
        negative_indices: (N, K) int indices into the rows; drawn uniformly without
            replacement per row when None.
        generator: random generator for the draw.

    Returns:
        ``(loss_sum, accuracy)``: the cross-entropy summed over rows (0-d), and the fraction of
        rows whose positive logit is the largest. With fewer than 2 rows there is nothing to
        contrast: ``(0, nan)``, the zero still connected to the graph.
    """
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(f"expected student and teacher (N, D) of equal shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    num_rows = student.shape[0]
    if num_rows < 2:
        return student.sum() * 0.0, float("nan")
    k = num_acd_negatives(num_rows, num_negatives)
    if negative_indices is None:
        negative_indices = _sample_negatives(num_rows, k, student.device, generator)
    elif negative_indices.shape != (num_rows, k):
        raise ValueError(f"negative_indices must be (N, K) = ({num_rows}, {k}), got {tuple(negative_indices.shape)}")
    negative_indices = negative_indices.long()

    s = F.normalize(student, dim=-1, eps=_NORM_EPS)
    t = F.normalize(teacher.to(student.dtype), dim=-1, eps=_NORM_EPS)
    positive = (s * t).sum(dim=-1, keepdim=True)  # (N, 1)
    # All cosines once (N x N), then the sampled columns: cheaper than gathering (N, K, D).
    negatives = (s @ t.transpose(0, 1)).gather(1, negative_indices)  # (N, K)
    if remove_self:
        own = torch.arange(num_rows, device=student.device).unsqueeze(1)
        negatives = negatives.masked_fill(negative_indices == own, _MASKED_LOGIT)
    logits = torch.cat([positive, negatives], dim=1)
    loss = (torch.logsumexp(logits / temperature, dim=1) - logits[:, 0] / temperature).sum()
    with torch.no_grad():
        accuracy = float((logits.argmax(dim=1) == 0).float().mean().item())
    return loss, accuracy


def linguistic_regression_loss(student: torch.Tensor, teacher: torch.Tensor,
                               padding_mask: torch.Tensor) -> torch.Tensor:
    """Squared error summed over dimensions and valid tokens (no division by D or by the count).

    Args:
        student: (B, N, D) projected decoder states.
        teacher: (B, N, D) the language model's vectors.
        padding_mask: (B, N) bool, True = padded token (excluded).

    Returns:
        0-d sum.
    """
    if student.shape != teacher.shape or padding_mask.shape != student.shape[:2]:
        raise ValueError(f"expected student/teacher (B, N, D) and padding_mask (B, N), got "
                         f"{tuple(student.shape)}, {tuple(teacher.shape)}, {tuple(padding_mask.shape)}")
    valid = (~padding_mask.to(torch.bool)).unsqueeze(-1).to(student.dtype)
    return (((student - teacher.to(student.dtype)) * valid) ** 2).sum()
