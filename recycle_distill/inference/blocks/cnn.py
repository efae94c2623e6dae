"""The student's CNN front end for inference: the channels-last runner of :mod:`.conv_runner`."""

from __future__ import annotations

from torch import Tensor

from recycle_distill.students.blocks.feature_extractor import ConvFeatureExtractor
from recycle_distill.inference.blocks.conv_runner import run_conv_blocks


class FastConvFeatureExtractor(ConvFeatureExtractor):
    """:class:`ConvFeatureExtractor` with the channels-last CPU inference runner.

    Same parameters and state dict; training and other devices run the plain blocks.
    """

    def forward(self, waveforms: Tensor) -> Tensor:
        """(B, S) waveforms -> (B, C, T) features (on the fast path a view of (B, T, C) memory)."""
        return run_conv_blocks(self.conv_layers, waveforms)
