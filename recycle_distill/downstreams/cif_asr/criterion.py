"""The CIF-HieraDist training loss: summed terms, weighted, divided by the target token count.

``total = CE + w_q * quantity + w_ctc * CTC + w_acd * ACD + w_lrd * LRD`` over the batch, each term
a sum (not a mean), divided by the number of target tokens with ``<eos>`` included
(``docs/cif.md``, "Loss"). Label smoothing follows ``torch.nn.functional.cross_entropy``: the
smoothing mass is spread over all V units (fairseq spreads it over V - 1, a negligible
difference for thousands of units).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from recycle_distill.downstreams.cif_asr.hieradist import (
    acoustic_contrastive_loss,
    linguistic_regression_loss,
)

from recycle_distill.downstreams.cif_asr.config import LossConfig

__all__ = ["LossOutput", "TERMS", "assemble_loss", "ctc_term", "cross_entropy_term", "quantity_term"]

logger = logging.getLogger(__name__)

TERMS = ("ce", "quantity", "ctc", "acd", "lrd")


@dataclass
class LossOutput:
    """loss: the normalised total (0-d); terms: the summed terms (0-d tensors, unweighted);
    stats: floats for logging (``num_tokens``, ``acd_accuracy`` (nan when not computed),
    ``acd_skipped`` (1.0 when ACD was on but the batch had fewer than 2 tokens), ...)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def target_padding_mask(target_lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(B, length) bool, True beyond each target (EOS included in the length)."""
    positions = torch.arange(length, device=target_lengths.device)
    return positions.unsqueeze(0) >= target_lengths.unsqueeze(1)


def cross_entropy_term(logits: torch.Tensor, targets: torch.Tensor, padding_mask: torch.Tensor,
                       label_smoothing: float) -> torch.Tensor:
    """Label-smoothed CE summed over valid target positions. logits (B, L, V), targets (B, L)."""
    flat_targets = targets.masked_fill(padding_mask, -100)
    return F.cross_entropy(logits.float().flatten(0, 1), flat_targets.flatten(), ignore_index=-100,
                           label_smoothing=label_smoothing, reduction="sum")


def quantity_term(alpha_sum: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """sum_b |sum_t alpha_bt - L_b| on the unscaled weights (L includes <eos>)."""
    return (alpha_sum.float() - target_lengths.to(torch.float32)).abs().sum()


def ctc_term(log_probs: torch.Tensor, input_lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """CTC summed over utterances, on the targets without their final <eos>.

    Args:
        log_probs: (B, T, V) log-softmax of the CTC head.
        input_lengths: (B,) valid encoder frames.
        targets: (B, L) with <eos> at position ``target_lengths - 1``.
        target_lengths: (B,) including <eos>.
    """
    label_lengths = (target_lengths - 1).clamp_min(0)
    keep = ~target_padding_mask(label_lengths, targets.shape[1])
    labels = targets[keep]  # concatenated 1-D form: no padding value can leak in
    return F.ctc_loss(log_probs.float().transpose(0, 1), labels, input_lengths, label_lengths, blank=blank,
                      reduction="sum", zero_infinity=True)


def assemble_loss(cfg: LossConfig, *, logits: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
                  alpha_sum: torch.Tensor, ctc_log_probs: torch.Tensor, ctc_lengths: torch.Tensor, blank: int,
                  acd_student: Optional[torch.Tensor] = None, lrd_student: Optional[torch.Tensor] = None,
                  lm_vectors: Optional[torch.Tensor] = None,
                  generator: Optional[torch.Generator] = None) -> LossOutput:
    """All terms and the normalised total.

    Args:
        cfg: weights.
        logits: (B, L, V) teacher-forced decoder logits.
        targets: (B, L) units ``y_1 .. y_N, <eos>``, padded.
        target_lengths: (B,) including <eos>.
        alpha_sum: (B,) unscaled CIF weight sums.
        ctc_log_probs, ctc_lengths: (B, T, V) and (B,) of the CTC head.
        blank: the CTC blank unit.
        acd_student: (B, L, D_lm) projected CIF vectors (needed when ``cfg.acd > 0``).
        lrd_student: (B, L, D_lm) projected decoder states (needed when ``cfg.lrd > 0``).
        lm_vectors: (B, L, D_lm) language-model vectors aligned with ``targets``.
        generator: for ACD's negative sampling.
    """
    padding = target_padding_mask(target_lengths, targets.shape[1])
    num_tokens = int(target_lengths.sum())
    zero = logits.sum() * 0.0  # keeps unused terms on the device and in the graph
    terms = {
        "ce": cross_entropy_term(logits, targets, padding, cfg.label_smoothing),
        "quantity": quantity_term(alpha_sum, target_lengths),
        "ctc": ctc_term(ctc_log_probs, ctc_lengths, targets, target_lengths, blank) if cfg.ctc > 0 else zero,
        "acd": zero,
        "lrd": zero,
    }
    stats = {"num_tokens": float(num_tokens), "num_utterances": float(targets.shape[0]),
             "acd_accuracy": float("nan"), "acd_skipped": 0.0}
    if cfg.needs_lm and lm_vectors is None:
        raise ValueError("loss.acd/loss.lrd > 0 need language-model vectors (lm_vectors), got None")
    if cfg.acd > 0:
        valid = ~padding
        student_rows, teacher_rows = acd_student[valid], lm_vectors[valid]  # row-major, as the fixtures
        if student_rows.shape[0] < 2:
            # Nothing to contrast (the original crashes here): skip, and let the caller count it.
            logger.debug("ACD skipped: %d token(s) in the batch", student_rows.shape[0])
            stats["acd_skipped"] = 1.0
        else:
            terms["acd"], stats["acd_accuracy"] = acoustic_contrastive_loss(
                student_rows, teacher_rows, num_negatives=cfg.acd_negatives, temperature=cfg.acd_temperature,
                remove_self=True, generator=generator)
    if cfg.lrd > 0:
        terms["lrd"] = linguistic_regression_loss(lrd_student, lm_vectors, padding)
    weights = {"ce": 1.0, "quantity": cfg.quantity, "ctc": cfg.ctc, "acd": cfg.acd, "lrd": cfg.lrd}
    total = sum(weights[name] * terms[name] for name in TERMS)
    loss = total / max(num_tokens, 1)
    return LossOutput(loss=loss, terms=terms, stats=stats)
