"""Distillation objectives as pure functions of batch-first (B, T, D) layer outputs.

* :func:`masking_distillation_loss`: MaskHuBERT / ARMHuBERT training loss (reference-exact).
* :func:`validation_loss`: their ``v_loss`` (plain MSE, no masking).
* :func:`star_loss`: STaRHuBERT's temporal Gram matrix losses (layer-wise + intra-layer).
* :func:`hint_loss` / :func:`fithubert_hint_loss`: weighted per-layer MSE (FitHuBERT).

Every function returns ``(total, terms)``; teacher tensors may be longer than the student's
and are cut to its frame count keeping the first frames.
"""

from recycle_distill.training.losses.hints import (
    fithubert_hint_loss,
    fithubert_hint_pairs,
    hint_loss,
    layer_mse,
)
from recycle_distill.training.losses.masked_frames import MASKING_TERMS, masking_distillation_loss
from recycle_distill.training.losses.star import (
    STAR_NORMALIZATIONS,
    STAR_REDUCTIONS,
    gram_distance,
    star_loss,
    temporal_gram,
)
from recycle_distill.training.losses.validation import validation_loss

__all__ = [
    "masking_distillation_loss",
    "MASKING_TERMS",
    "validation_loss",
    "star_loss",
    "temporal_gram",
    "gram_distance",
    "STAR_NORMALIZATIONS",
    "STAR_REDUCTIONS",
    "hint_loss",
    "layer_mse",
    "fithubert_hint_pairs",
    "fithubert_hint_loss",
]
