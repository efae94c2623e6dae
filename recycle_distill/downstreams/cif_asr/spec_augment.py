"""SpecAugment's frequency and time masks on the recognizer's input features (training only).

The original recipe masked 80-channel fbank at 100 frames/s: 2 frequency masks up to 27 channels
and 2 time masks up to 50 frames (0.5 s), no time warping. We feed a featurizer's ``D`` channels at
the upstream's frame period ``P`` ms, so the widths keep their share of the channels and their
duration (:class:`~.config.SpecAugmentSettings`): ``round(27 * D / 80)`` channels (259 of 768,
162 of 480) and ``round(50 * 10 / P)`` frames (25 at 20 ms, 13 at 40 ms), halves rounded up.

Each utterance is masked on its own, before padding, with
:func:`torchaudio.functional.mask_along_axis` (a width drawn from ``[0, max)``, a start drawn
inside the utterance, filled with 0), so a mask never lands on or is sized by another
utterance's padding. Draws use torch's global generator, which S3PRL seeds.
"""

from __future__ import annotations

import logging
import math

import torch
from torchaudio.functional import mask_along_axis

from recycle_distill.downstreams.cif_asr.config import SpecAugmentSettings
from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = ["SpecAugment"]

logger = logging.getLogger(__name__)

TIME_AXIS, CHANNEL_AXIS = 0, 1  # of one utterance's features (T, D)
MASK_VALUE = 0.0


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)  # 12.5 -> 13 (Python's round() would give 12)


class SpecAugment:
    """The masks for features of width ``feature_dim`` at ``upstream_rate`` samples per frame.

    Holds no tensors (the expert's state dict is unchanged by it).

    Attributes:
        freq_width: the widest channel mask, scaled to ``feature_dim``.
        time_width: the widest time mask in upstream frames, scaled to the frame period.
    """

    def __init__(self, settings: SpecAugmentSettings, feature_dim: int, upstream_rate: int):
        self.settings = settings
        frame_ms = 1000.0 * upstream_rate / SAMPLE_RATE
        self.freq_width = _round_half_up(settings.freq_width * feature_dim / settings.reference_dim)
        self.time_width = _round_half_up(settings.time_width * settings.reference_frame_ms / frame_ms)
        logger.info("SpecAugment: %d channel masks up to %d of %d, %d time masks up to %d frames of %g ms",
                    settings.freq_masks, self.freq_width, feature_dim, settings.time_masks, self.time_width,
                    frame_ms)

    def mask(self, features: torch.Tensor) -> torch.Tensor:
        """One utterance's features (T, D), masked (a new tensor; the input is left as it was)."""
        for _ in range(self.settings.freq_masks):
            features = mask_along_axis(features, self.freq_width, MASK_VALUE, CHANNEL_AXIS)
        for _ in range(self.settings.time_masks):
            features = mask_along_axis(features, self.time_width, MASK_VALUE, TIME_AXIS,
                                       p=self.settings.max_time_ratio)
        return features

    def __call__(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """B unpadded utterances, each (T_i, D) -> the same, masked."""
        return [self.mask(utterance) for utterance in features]
