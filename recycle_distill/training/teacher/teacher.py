"""The frozen distillation teacher: an S3PRL HuBERT / WavLM / wav2vec 2.0 model, run our way.

:class:`Teacher` wraps the S3PRL module (``self.model``) and drives its own submodules --
``feature_extractor``, ``layer_norm``, ``post_extract_proj``, ``mask_emb``, ``encoder`` and the
model's own padding rule -- so that the CNN can run once while the transformer sees a masked
and an unmasked copy of the same batch. Per-layer outputs are collected with forward hooks on
``encoder.layers`` (the same place S3PRL's upstream experts hook), which works for all three
encoder implementations.

Frame padding follows each model's own rule: HuBERT and WavLM call the model's
``forward_padding_mask`` (a frame is padding only if ALL its samples are padding, so an
11,200-sample wave padded to 16,000 has 35 valid frames, not the 34 of the conv formula);
wav2vec 2.0 uses the conv-length formula as its ``forward`` does.

Precision: ``teacher.to(torch.bfloat16)`` makes the teacher compute in bf16 (the trainer does
this once for ``train.precision: bf16``; the weights are frozen, so no float32 master copy is
kept). Waves are normalised in float32 and then cast; S3PRL's first-block GroupNorm still
computes in float32, torch's CPU LayerNorm and softmax kernels accumulate bf16 inputs in
float32, and autocast is switched off inside such a teacher (it would only re-cast). Outputs
come back in the teacher's dtype; the losses upcast them to float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recycle_distill.inference.blocks.conv_runner import run_conv_blocks
from recycle_distill.students.blocks.masks import conv_output_lengths, lengths_to_padding_mask
from recycle_distill.training.teacher.span_masks import RandomLike, SpanMaskConfig, compute_mask_indices
from recycle_distill.training.teacher.s3prl_models import KINDS, kind_of_model

logger = logging.getLogger(__name__)

__all__ = ["Teacher", "TeacherOutput"]


@dataclass
class TeacherOutput:
    """What one teacher pass returns (batch-first).

    Attributes:
        layer_results: L tensors (B, T, D): the output of encoder layer i (before any final
            encoder LayerNorm), the distillation targets.
        padding_mask: (B, T) bool, True = padding frame (all False when nothing is padded).
        last_hidden_state: (B, T, D) the encoder output (= layer_results[-1] for post-LN
            models; with the final LayerNorm for pre-LN ones).
        encoder_input: (B, T, D) the first encoder layer's input (after the positional conv
            and, for post-LN models, the encoder LayerNorm): STaR's intra-layer Gram of layer 1
            pairs it with layer_results[0]. None for teachers that do not expose it.
    """

    layer_results: list[Tensor]
    padding_mask: Tensor
    last_hidden_state: Tensor
    encoder_input: Optional[Tensor] = None


class Teacher(nn.Module):
    """A frozen, always-eval teacher around an S3PRL model.

    Args:
        model: an S3PRL ``HubertModel`` / ``WavLM`` / ``Wav2Vec2Model`` with weights loaded.
        normalize: layer-normalise each wave over its valid samples first (the model's
            ``task.normalize``).
        mask_config: default span masking for :meth:`compute_mask_indices` (default: the
            model's own cfg values).
        source: where it came from, for logs and ``repr``.
    """

    def __init__(
        self,
        model: nn.Module,
        normalize: bool = False,
        mask_config: Optional[SpanMaskConfig] = None,
        source: str = "<model>",
    ) -> None:
        super().__init__()
        kind = kind_of_model(model)
        if kind is None:
            raise TypeError(f"{source}: expected an S3PRL model of kind {KINDS}, got {type(model).__name__}")
        self.kind = kind
        self.model = model
        self.normalize = bool(normalize)
        self.source = source
        self.mask_config = mask_config or SpanMaskConfig.from_model(model)
        # (kernel, stride) of the CNN, read from the built modules so every source agrees.
        self.conv_layers = [(int(block[0].kernel_size[0]), int(block[0].stride[0]))
                            for block in model.feature_extractor.conv_layers]
        self.crop_seq_to_multiple = int(getattr(model, "crop_seq_to_multiple", 1)) if kind == "wav2vec2" else 1
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    # ----------------------------------------------------------------- properties
    @property
    def num_layers(self) -> int:
        return len(self.model.encoder.layers)

    @property
    def embed_dim(self) -> int:
        return int(self.model.mask_emb.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the teacher computes in: its weights' (float32 unless cast with ``.to``)."""
        return self.model.mask_emb.dtype

    @property
    def downsample_rate(self) -> int:
        """Samples per frame (320 for the 16 kHz Base models)."""
        return int(np.prod([stride for _, stride in self.conv_layers]))

    def train(self, mode: bool = True) -> "Teacher":
        """Stay in eval mode whatever is asked: a teacher never uses dropout or layer drop."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, layers={self.num_layers}, dim={self.embed_dim}, source={self.source!r}"

    # ------------------------------------------------------------------ frames
    def num_frames(self, num_samples: int) -> int:
        """T for a (padded) wave of ``num_samples`` samples."""
        frames = int(conv_output_lengths(torch.tensor([int(num_samples)]), self.conv_layers)[0])
        return frames - frames % self.crop_seq_to_multiple

    def frame_padding_mask(self, lengths: Tensor, num_samples: int) -> Tensor:
        """(B, T) frame padding mask (True = pad) for waves of ``lengths`` padded to ``num_samples``.

        Uses the model's own rule (see module doc); equal to the mask :meth:`forward` returns.
        """
        frames = conv_output_lengths(torch.tensor([int(num_samples)]), self.conv_layers)[0]
        return self._frame_padding(lengths, int(num_samples), int(frames))

    def _frame_padding(self, lengths: Tensor, num_samples: int, frames: int) -> Tensor:
        lengths = lengths.to(torch.long)
        if self.kind in ("hubert", "wavlm"):
            wave_padding = lengths_to_padding_mask(lengths, num_samples)
            # The model's method only reads the frame count off its first argument.
            shape_only = wave_padding.new_empty((lengths.shape[0], frames, 0), dtype=torch.float32)
            mask = self.model.forward_padding_mask(shape_only, wave_padding)
        else:
            valid = self.model._get_feat_extract_output_lengths(lengths)
            mask = lengths_to_padding_mask(valid, frames)
        keep = frames - frames % self.crop_seq_to_multiple
        return mask[:, :keep]

    # ------------------------------------------------------------------ masking
    def compute_mask_indices(
        self,
        padding_mask_or_shape: Union[Tensor, tuple[int, int]],
        mask_prob: Optional[float] = None,
        mask_length: Optional[int] = None,
        generator: RandomLike = None,
        config: Optional[SpanMaskConfig] = None,
    ) -> Tensor:
        """Span mask on the teacher's frame grid (see :mod:`.masking`).

        Args:
            padding_mask_or_shape: (B, T) frame padding mask (True = pad), or a (B, T) shape.
            mask_prob / mask_length: override :attr:`mask_config` (or ``config``).
            generator: seed, ``np.random.RandomState``, ``torch.Generator`` or None (torch's
                global RNG picks the seed).
            config: a whole :class:`SpanMaskConfig` instead of :attr:`mask_config`.

        Returns:
            (B, T) bool, True = masked; every row has the same number of masked frames.
        """
        config = config or self.mask_config
        updates = {key: value for key, value in (("mask_prob", mask_prob), ("mask_length", mask_length))
                   if value is not None}
        if updates:
            config = dataclasses.replace(config, **updates)
        return compute_mask_indices(padding_mask_or_shape, config, generator)

    # ------------------------------------------------------------------ forward
    def _prepare(self, waveforms: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """CNN features after LayerNorm and projection (B, T, D) and the (B, T) padding mask."""
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (B, S), got shape {tuple(waveforms.shape)}")
        batch, num_samples = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long, device=waveforms.device)
        lengths = lengths.to(device=waveforms.device, dtype=torch.long)
        if lengths.shape != (batch,) or bool((lengths > num_samples).any()) or bool((lengths < 1).any()):
            raise ValueError(f"lengths must be (B,)={batch} values in [1, {num_samples}], got {lengths.tolist()}")
        if self.normalize:
            waveforms = self._normalize(waveforms, lengths)
        waveforms = waveforms.to(self.dtype)
        with self._own_precision(waveforms.device):
            # S3PRL's blocks, run as our CNN runs them (channels-last in CPU inference; same values).
            features = run_conv_blocks(self.model.feature_extractor.conv_layers, waveforms).transpose(1, 2)
            features = self.model.layer_norm(features)
            padding_mask = self._frame_padding(lengths, num_samples, features.shape[1])
            features = features[:, : padding_mask.shape[1]]  # wav2vec 2.0's crop_seq_to_multiple
            if self.model.post_extract_proj is not None:
                features = self.model.post_extract_proj(features)
        return features, padding_mask

    def _own_precision(self, device: torch.device):
        """Autocast off in a teacher cast to a reduced precision (its weights are the plan);
        a float32 teacher follows any autocast around it, as before."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, enabled=False)

    @staticmethod
    def _normalize(waveforms: Tensor, lengths: Tensor) -> Tensor:
        """Per-utterance ``layer_norm(wav, wav.shape)`` over the valid samples; padding stays 0."""
        out = torch.zeros_like(waveforms)
        for row, length in enumerate(lengths.tolist()):
            out[row, :length] = F.layer_norm(waveforms[row, :length], (length,))
        return out

    def _apply_mask(self, features: Tensor, mask_indices: Tensor) -> Tensor:
        if mask_indices.shape != features.shape[:2]:
            raise ValueError(
                f"mask_indices must be (B, T)={tuple(features.shape[:2])} on the teacher's frame grid, "
                f"got {tuple(mask_indices.shape)}"
            )
        mask = mask_indices.to(device=features.device, dtype=torch.bool).unsqueeze(-1)
        return torch.where(mask, self.model.mask_emb.to(features.dtype), features)

    @contextlib.contextmanager
    def _collect_layer_outputs(self) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
        """Hooks that collect each encoder layer's output (T, B, D), and the first layer's
        input (T, B, D), while the block runs (S3PRL's encoder returns neither per layer)."""
        outputs: list[Tensor] = []
        first_input: list[Tensor] = []
        layers = self.model.encoder.layers
        handles = [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out[0])) for layer in layers]

        def first_layer_input(_module: nn.Module, args: tuple) -> Optional[tuple]:
            first_input.append(args[0])
            if args[0].dtype == torch.float32 or args[0].is_contiguous():
                return None  # float32 keeps S3PRL's exact kernels (bit-identical targets)
            # S3PRL hands layer 0 a transposed (T, B, D) view. With frozen weights, F.linear cannot
            # fold it into one matmul and runs a batched one over a (T, D, D) broadcast of each
            # projection weight; float32's kernel reads the broadcast in place, bf16's copies it
            # (three ~0.35 GB copies at 2 x 6 s): this halves a bf16 teacher pass here.
            return (args[0].contiguous(),) + tuple(args[1:])

        handles.append(layers[0].register_forward_pre_hook(first_layer_input))
        try:
            yield outputs, first_input
        finally:
            for handle in handles:
                handle.remove()

    def _encode(self, x: Tensor, padding_mask: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Run the encoder; L layer outputs, the encoder output and the first layer's input, (B, T, D) each."""
        frames = x.shape[1]
        # Passing None when nothing is padded keeps S3PRL on its unmasked path (same values).
        mask = padding_mask if bool(padding_mask.any()) else None
        with self._collect_layer_outputs() as (outputs, first_input), self._own_precision(x.device):
            last, _ = self.model.encoder(x, padding_mask=mask)
        if len(outputs) != self.num_layers:
            raise RuntimeError(f"expected {self.num_layers} layer outputs, got {len(outputs)} (layer drop active?)")
        return [out.transpose(0, 1)[:, :frames] for out in outputs], last, first_input[0].transpose(0, 1)[:, :frames]

    @torch.no_grad()
    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None,
                mask_indices: Optional[Tensor] = None) -> TeacherOutput:
        """One teacher pass.

        Args:
            waveforms: (B, S) right-zero-padded 16 kHz waves.
            lengths: (B,) valid samples per wave (None = all S).
            mask_indices: optional (B, T) bool; those frames' features become ``mask_emb``.

        Returns:
            :class:`TeacherOutput` with L layer outputs (B, T, D).
        """
        features, padding_mask = self._prepare(waveforms, lengths)
        if mask_indices is not None:
            features = self._apply_mask(features, mask_indices)
        layers, last, encoder_input = self._encode(features, padding_mask)
        return TeacherOutput(layers, padding_mask, last, encoder_input)

    @torch.no_grad()
    def forward_masked_and_unmasked(
        self, waveforms: Tensor, lengths: Optional[Tensor], mask_indices: Tensor
    ) -> tuple[TeacherOutput, TeacherOutput]:
        """Masked and unmasked passes with one CNN run and one 2B-batch transformer run.

        Runs under ``no_grad`` rather than ``inference_mode``: inference tensors cannot be
        saved for backward, and these outputs are loss targets.

        Args:
            waveforms: (B, S); lengths: (B,) or None; mask_indices: (B, T) bool.

        Returns:
            (masked, unmasked) :class:`TeacherOutput`, each with (B, T, D) layers.
        """
        features, padding_mask = self._prepare(waveforms, lengths)
        batch = features.shape[0]
        masked = self._apply_mask(features, mask_indices)
        both = torch.cat([masked, features], dim=0)
        layers, last, first = self._encode(both, torch.cat([padding_mask, padding_mask], dim=0))
        masked_out = TeacherOutput([layer[:batch] for layer in layers], padding_mask, last[:batch], first[:batch])
        unmasked_out = TeacherOutput([layer[batch:] for layer in layers], padding_mask, last[batch:], first[batch:])
        return masked_out, unmasked_out
