"""The S3PRL upstream wrapper shared by every family's ``upstreams/<family>/expert.py``."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from recycle_distill.students.build import ConfigSource
from recycle_distill.checkpoint import load_student
from recycle_distill.s3prl.compat import apply_compat
from recycle_distill.inference import compute_dtype, convert_precision, parse_precision
from recycle_distill.inference.chunked import chunk_settings, run_chunked_batch
from recycle_distill.students.waveforms import validate_waveforms
from recycle_distill.students.blocks.masks import pad_waveforms
from recycle_distill.util.options import check_bool

logger = logging.getLogger(__name__)

__all__ = ["StudentUpstream", "DOWNSAMPLE_RATE"]

# The released students' rate, for callers that need it before a model exists; an upstream
# reports its own model's rate (computed from the CNN strides).
DOWNSAMPLE_RATE = 320


class StudentUpstream(nn.Module):
    """S3PRL upstream: a list of 1-D waveforms in, ``hidden_states`` (N x (B, T, D)) out.

    Args:
        ckpt: a released Lightning checkpoint, a state dict, or our compact safetensors file.
        model_config: the architecture (``-g`` YAML, preset name or dict); optional for
            compact files and for weights matching a preset of the family.
        family: which student to build (set by each family's expert).
        dtype: inference precision, ``fp32`` | ``bf16`` | ``int8`` (see
            :func:`recycle_distill.inference.optimize_for_inference`).
        optimize: build with the CPU inference blocks (default); False builds the plain blocks.
        output_dtype: dtype of the returned hidden states (``fp32`` unless asked).
        chunk_seconds: compute each recording in windows that keep this many seconds each
            (None: the whole recording at once). For unbounded inputs; memory is one window's.
        overlap_seconds: with ``chunk_seconds``, the context each window adds on both sides and
            drops (default 0). See :mod:`recycle_distill.inference.chunked` and
            docs/inference.md, "Long recordings", for the deviation from full context.
        overrides: distiller keys such as ``reference_batched_reuse=True`` or
            ``per_utterance_cnn=True``.
    """

    family = ""

    def __init__(
        self,
        ckpt: Union[str, os.PathLike],
        model_config: Optional[ConfigSource] = None,
        family: Optional[str] = None,
        dtype: Union[str, torch.dtype, None] = "fp32",
        optimize: bool = True,
        output_dtype: Union[str, torch.dtype, None] = "fp32",
        chunk_seconds: Optional[float] = None,
        overlap_seconds: Optional[float] = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        optimize = check_bool(optimize, "optimize")
        self.chunking = chunk_settings(chunk_seconds, overlap_seconds)
        # Our entry points make s3prl importable on torchaudio >= 2.9 (no-op otherwise), so
        # S3PRL's Featurizer and downstreams work on what this returns.
        apply_compat()
        self.family = family or self.family
        for s3prl_only in ("refresh", "legacy"):
            overrides.pop(s3prl_only, None)
        self.precision = parse_precision(dtype)
        # The blocks are chosen as the model is built; only the precision is converted after.
        model = load_student(ckpt, self.family, model_config or None, blocks="fast" if optimize else "plain",
                             **overrides)
        if optimize or self.precision != "fp32":
            model = convert_precision(model, self.precision, output_dtype=output_dtype)
        self.model = model
        self.name = f"[{self.family}]"

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        return self.model.downsample_rate

    def forward(self, wavs: list[Tensor]) -> dict[str, Any]:
        """Run the student on a list of waveforms.

        Args:
            wavs: B float tensors (S_b,) at 16 kHz, any float dtype: each is computed in the
                upstream's precision (``dtype``), whatever the others are.

        Returns:
            ``hidden_states``: N tensors (B, T, D); ``last_hidden_state``: (B, T, D).
        """
        validate_waveforms(wavs, self.model.receptive_field)
        dtype = compute_dtype(self.precision)
        if self.chunking is not None:
            hidden_states = self._chunked([wave.to(dtype) for wave in wavs])
        else:
            batch, lengths = pad_waveforms([wave.to(dtype) for wave in wavs])
            hidden_states = list(self.model(batch, lengths).hidden_states)
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}

    def _chunked(self, wavs: list[Tensor]) -> list[Tensor]:
        """Each (S_b,) recording in windows (``chunk_seconds``), then padded into N (B, T, D)."""
        model = self.model

        def run_window(window: Tensor) -> list[Tensor]:  # (S_w,) -> N x (T_w, D)
            states = model(window[None], torch.tensor([window.numel()], device=window.device)).hidden_states
            return [state[0] for state in states]

        frames = [int(count) for count in model.frame_lengths(torch.tensor([wave.numel() for wave in wavs]))]
        return run_chunked_batch(run_window, wavs, frames, model.downsample_rate, model.receptive_field, self.chunking)
