"""The encoder for CPU inference: layers run utterance by utterance when maps are large."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from recycle_distill.students.blocks.encoder import TransformerEncoder
from recycle_distill.inference.blocks.conv_runner import LARGE_TENSOR_BYTES
from recycle_distill.inference.blocks.derived import fast_path_applies


class PerUtteranceEncoder(TransformerEncoder):
    """:class:`TransformerEncoder` that, on the fast path, runs the layers one utterance at a time
    when attention maps are handed between layers (ARMHuBERT) and a batch's maps are large.

    The layers never mix utterances, so the (H, T, T) maps of a 10 s utterance (12 MB) stay
    in cache and in reused heap memory instead of a fresh (B, H, T, T) mapping that
    page-faults on every layer. The reference batch/head pairing of reused maps does mix
    utterances; such models keep the batch.
    """

    def run_layers(self, x: Tensor, attention_mask: Optional[Tensor]) -> list[Tensor]:
        """(B, T, E) through every layer -> the N layer outputs (B, T, E)."""
        if not self._runs_per_utterance(x):
            return super().run_layers(x, attention_mask)
        per_item = [
            super(PerUtteranceEncoder, self).run_layers(
                x[i : i + 1], None if attention_mask is None else attention_mask[i : i + 1])
            for i in range(x.shape[0])
        ]
        return [torch.cat(outputs) for outputs in zip(*per_item)]

    def _runs_per_utterance(self, x: Tensor) -> bool:
        if x.shape[0] == 1 or not fast_path_applies(x) or not any(self.keeps_probs):
            return False
        heads = max((getattr(getattr(layer, "self_attn", None), "num_heads", 1) for layer in self.layers), default=1)
        if x.shape[0] * heads * x.shape[1] ** 2 * 4 <= LARGE_TENSOR_BYTES:  # float32 maps
            return False
        return not any(getattr(getattr(layer, "self_attn", None), "pair_like_reference", False) for layer in self.layers)
