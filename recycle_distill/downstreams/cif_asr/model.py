"""CIF recognizer on top of an S3PRL featurizer: encoder, CTC head, CIF, decoder, losses, decoding.

Encoder (``docs/cif.md``, "Model"): Linear(upstream_dim -> d), then ``conformer_stacks``
``torchaudio.models.Conformer`` stacks with x2 max-pooling between consecutive stacks. The number
of poolings is the smallest that brings the upstream frame period into the CIF window
(60-100 ms): 20 ms -> 2 (80 ms), 10 ms -> 3 (80 ms). Poolings fill the gaps between stacks
first (earliest gaps first); any beyond those go before the first stack, where they are
cheapest. Periods that no power of two brings into the window (e.g. 55 ms -> 55, 110) are
refused by name.

Padding never leaks into valid frames: padded frames are zeroed after the input Linear, before
every depthwise convolution (torchaudio's Conformer layer does not mask it, and its kernel of 15
would mix up to 7 padded frames into the last valid ones) and after every stack; max-pooling
sees padded frames as -inf. In eval mode an utterance's output is thus independent of how much
padding its batch adds. (In training the convolution module's BatchNorm statistics include the
zeroed padded frames, as in any padded Conformer batch.)
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from recycle_distill.downstreams.cif_asr.cif import CifWeightPredictor, continuous_integrate_and_fire
from recycle_distill.util.sample_rate import SAMPLE_RATE  # re-exported: the recognizer's input rate

from recycle_distill.downstreams.cif_asr.beam_search import beam_search
from recycle_distill.downstreams.cif_asr.config import DecodeConfig, LossConfig, ModelConfig
from recycle_distill.downstreams.cif_asr.criterion import LossOutput, assemble_loss, target_padding_mask
from recycle_distill.downstreams.cif_asr.decoder import CifDecoder

__all__ = ["CifRecognizer", "CifEncoder", "CifFrameRateError", "plan_poolings", "SAMPLE_RATE"]

logger = logging.getLogger(__name__)


class CifFrameRateError(ValueError):
    """An upstream frame rate that x2 max-pooling cannot bring into the CIF window."""


def plan_poolings(upstream_rate: int, stacks: int, min_ms: float = 60.0, max_ms: float = 100.0) -> tuple[int, int]:
    """(poolings before the first stack, poolings between stacks) for an upstream rate.

    Args:
        upstream_rate: samples per upstream frame at 16 kHz (S3PRL's ``get_downsample_rates``).
        stacks: Conformer stacks (``stacks - 1`` gaps between them).
        min_ms, max_ms: the CIF frame-period window.

    Raises:
        CifFrameRateError: naming the rate and the periods x2 poolings can reach.
    """
    if not isinstance(upstream_rate, int) or upstream_rate < 1:
        raise CifFrameRateError(f"upstream downsample rate must be a positive number of samples, got {upstream_rate!r}")
    period = 1000.0 * upstream_rate / SAMPLE_RATE
    poolings, reachable = 0, []
    while period * 2**poolings <= max_ms:
        if period * 2**poolings >= min_ms:
            break
        reachable.append(period * 2**poolings)
        poolings += 1
    final = period * 2**poolings
    if not min_ms <= final <= max_ms:
        shown = ", ".join(f"{p:g}" for p in reachable + [final])
        raise CifFrameRateError(
            f"upstream frame period {period:g} ms (downsample rate {upstream_rate} at 16 kHz) cannot reach the CIF "
            f"window {min_ms:g}-{max_ms:g} ms by x2 max-pooling (reachable: {shown} ms); choose another upstream or "
            f"set model.cif_min_frame_ms/cif_max_frame_ms")
    between = min(poolings, stacks - 1)
    return poolings - between, between


def lengths_to_padding_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(B, length) bool, True = padded frame."""
    return torch.arange(length, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


def masked_max_pool(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x2 max-pooling in time that only ever picks valid frames.

    Args:
        x: (B, T, C); lengths: (B,).

    Returns:
        ((B, ceil(T / 2), C) with padded frames zeroed, (B,) ceil(lengths / 2)).
    """
    pad = lengths_to_padding_mask(lengths, x.shape[1]).unsqueeze(-1)
    x = x.masked_fill(pad, torch.finfo(x.dtype).min)
    pooled = F.max_pool1d(x.transpose(1, 2), kernel_size=2, stride=2, ceil_mode=True).transpose(1, 2)
    new_lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
    new_pad = lengths_to_padding_mask(new_lengths, pooled.shape[1]).unsqueeze(-1)
    return pooled.masked_fill(new_pad, 0.0), new_lengths


def _masked_convolution(module: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """torchaudio's Conformer convolution module with padded frames zeroed before the depthwise conv.

    Args:
        module: the layer's ``conv_module`` (layer norm, then pointwise conv, GLU, depthwise conv, ...).
        x: (B, T, D); keep: (B, 1, T) 1.0 on valid frames.
    """
    y = module.layer_norm(x).transpose(1, 2)
    for sub in module.sequential:
        if isinstance(sub, nn.Conv1d) and sub.groups > 1:
            y = y * keep
        y = sub(y)
    return y.transpose(1, 2)


def _conformer_layer(layer: nn.Module, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """One torchaudio ``ConformerLayer`` (convolution after attention, its default) with masking.

    Args:
        x: (B, T, D); padding_mask: (B, T) True = padded.
    """
    keep = (~padding_mask).unsqueeze(1).to(x.dtype)
    x = x + 0.5 * layer.ffn1(x)
    attended = layer.self_attn_layer_norm(x).transpose(0, 1)
    attended, _ = layer.self_attn(attended, attended, attended, key_padding_mask=padding_mask, need_weights=False)
    x = x + layer.self_attn_dropout(attended.transpose(0, 1))
    x = x + _masked_convolution(layer.conv_module, x, keep)
    x = x + 0.5 * layer.ffn2(x)
    return layer.final_layer_norm(x)


class CifEncoder(nn.Module):
    """Linear + Conformer stacks with x2 max-pooling; see the module docstring.

    Args:
        cfg: sizes.
        upstream_dim: featurizer output width.
        upstream_rate: samples per upstream frame at 16 kHz.
    """

    def __init__(self, cfg: ModelConfig, upstream_dim: int, upstream_rate: int):
        super().__init__()
        self.pool_before, pool_between = plan_poolings(upstream_rate, cfg.conformer_stacks, cfg.cif_min_frame_ms,
                                                       cfg.cif_max_frame_ms)
        self.pool_after = [i < pool_between for i in range(cfg.conformer_stacks)]
        self.output_rate = upstream_rate * 2 ** (self.pool_before + pool_between)
        # Imported when a model is built, not when the module is: on torchaudio >= 2.9 our entry
        # points (the SUPERB launcher, load_experiment) install the compat layer first.
        from torchaudio.models import Conformer

        self.input_proj = nn.Linear(upstream_dim, cfg.d_model)
        self.stacks = nn.ModuleList(
            Conformer(input_dim=cfg.d_model, num_heads=cfg.conformer_heads, ffn_dim=cfg.conformer_ffn,
                      num_layers=cfg.conformer_layers, depthwise_conv_kernel_size=cfg.conformer_kernel,
                      dropout=cfg.conformer_dropout)
            for _ in range(cfg.conformer_stacks))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) -> ((B, T', d) with zeroed padding, (B,) pooled lengths)."""
        lengths = lengths.to(device=features.device, dtype=torch.long)
        x = self.input_proj(features)
        x = x.masked_fill(lengths_to_padding_mask(lengths, x.shape[1]).unsqueeze(-1), 0.0)
        for _ in range(self.pool_before):
            x, lengths = masked_max_pool(x, lengths)
        for stack, pool in zip(self.stacks, self.pool_after):
            padding = lengths_to_padding_mask(lengths, x.shape[1])
            for layer in stack.conformer_layers:
                x = _conformer_layer(layer, x, padding)
            x = x.masked_fill(padding.unsqueeze(-1), 0.0)
            if pool:
                x, lengths = masked_max_pool(x, lengths)
        return x, lengths


class CifRecognizer(nn.Module):
    """CIF speech recognizer with optional HieraDist (ACD + LRD) language-model distillation.

    Args:
        model_cfg, loss_cfg: see :mod:`.config`.
        upstream_dim: featurizer output width.
        upstream_rate: samples per upstream frame at 16 kHz (refused when the CIF window is unreachable).
        vocab_size: output units including the specials.
        lm_dim: language-model width; creates ``acd_proj`` and ``lrd_proj`` (required when ACD/LRD are on).
        blank, pad, bos, eos: special unit indices (CTC blank, padding, decoder start, end of sentence).
    """

    def __init__(self, model_cfg: ModelConfig, loss_cfg: LossConfig, upstream_dim: int, upstream_rate: int,
                 vocab_size: int, lm_dim: Optional[int] = None, *, blank: int = 0, pad: int = 1, bos: int = 2,
                 eos: int = 3):
        super().__init__()
        if loss_cfg.needs_lm and lm_dim is None:
            raise ValueError("loss.acd/loss.lrd > 0 need the language model's width (lm_dim)")
        self.model_cfg, self.loss_cfg = model_cfg, loss_cfg
        self.blank, self.pad, self.bos, self.eos = blank, pad, bos, eos
        d = model_cfg.d_model
        self.encoder = CifEncoder(model_cfg, upstream_dim, upstream_rate)
        self.ctc_head = nn.Linear(d, vocab_size)
        self.weight_predictor = CifWeightPredictor(d, channels=model_cfg.predictor_channels,
                                                   kernel_size=model_cfg.predictor_kernel,
                                                   dropout=model_cfg.predictor_dropout)
        self.decoder = CifDecoder(vocab_size, d, layers=model_cfg.decoder_layers, heads=model_cfg.decoder_heads,
                                  ffn_dim=model_cfg.decoder_ffn, dropout=model_cfg.decoder_dropout,
                                  embed_scale=model_cfg.embed_scale, padding_idx=pad)
        self.lm_dim = lm_dim
        self.acd_proj = nn.Linear(d, lm_dim) if lm_dim is not None else None
        self.lrd_proj = nn.Linear(d, lm_dim) if lm_dim is not None else None

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor):
        """(hidden (B, T', d), padding mask (B, T'), lengths (B,), CIF weights (B, T'))."""
        hidden, lengths = self.encoder(features, feature_lengths)
        padding = lengths_to_padding_mask(lengths, hidden.shape[1])
        alpha = self.weight_predictor(hidden, padding)
        return hidden, padding, lengths, alpha

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor, lm_vectors: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> LossOutput:
        """Training-mode pass (scaled CIF, teacher-forced decoder) and the loss.

        Args:
            features: (B, T, F) upstream features; feature_lengths: (B,).
            targets: (B, L) ``y_1 .. y_N, <eos>`` right-padded with ``pad``.
            target_lengths: (B,) including <eos>.
            lm_vectors: (B, L, D_lm) language-model vectors aligned with ``targets`` (ACD/LRD).
            generator: for ACD's negative sampling.

        Returns:
            :class:`~.criterion.LossOutput` (``loss`` normalised by the token count).
        """
        target_lengths = target_lengths.to(device=targets.device, dtype=torch.long)
        hidden, padding, lengths, alpha = self.encode(features, feature_lengths)
        cif = continuous_integrate_and_fire(hidden, alpha, padding, target_lengths=target_lengths,
                                            threshold=self.model_cfg.cif_threshold)
        # The scaled weights fire L times up to rounding; align the vectors with the targets exactly.
        length = targets.shape[1]
        fired = cif.fired[:, :length]
        fired = F.pad(fired, (0, 0, 0, length - fired.shape[1]))
        fired = fired.masked_fill(target_padding_mask(target_lengths, length).unsqueeze(-1), 0.0)
        prev_tokens = F.pad(targets, (1, 0), value=self.bos)[:, :-1]
        decoded = self.decoder(prev_tokens, fired)
        ctc_log_probs = torch.log_softmax(self.ctc_head(hidden).float(), dim=-1)
        use_acd = self.loss_cfg.acd > 0
        use_lrd = self.loss_cfg.lrd > 0
        out = assemble_loss(
            self.loss_cfg, logits=decoded.logits, targets=targets, target_lengths=target_lengths,
            alpha_sum=cif.alpha_sum, ctc_log_probs=ctc_log_probs, ctc_lengths=lengths, blank=self.blank,
            acd_student=self.acd_proj(fired) if use_acd else None,
            lrd_student=self.lrd_proj(decoded.state) if use_lrd else None,
            lm_vectors=lm_vectors, generator=generator)
        out.stats["num_fires_error"] = float((cif.fired_lengths - target_lengths).abs().sum())
        return out

    @torch.no_grad()
    def decode(self, features: torch.Tensor, feature_lengths: torch.Tensor,
               decode_cfg: Optional[DecodeConfig] = None) -> list[list[int]]:
        """Beam search over the inference-mode CIF (tail emitted for every utterance).

        Call in eval mode (dropout off). Returns B lists of unit indices without <bos>/<eos>.
        """
        return self.recognize(features, feature_lengths, decode_cfg)[0]

    @torch.no_grad()
    def recognize(self, features: torch.Tensor, feature_lengths: torch.Tensor,
                  decode_cfg: Optional[DecodeConfig] = None) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
        """:meth:`decode` and the CIF weights its vectors were integrated with (for token times).

        Returns:
            (B lists of unit indices, (B, T') CIF weights, zero on padding, (B,) valid encoder
            frames); encoder frame ``f`` covers upstream samples ``[f, f + 1) * encoder.output_rate``.
        """
        decode_cfg = decode_cfg or DecodeConfig()
        hidden, padding, lengths, alpha = self.encode(features, feature_lengths)
        cif = continuous_integrate_and_fire(hidden, alpha, padding, threshold=self.model_cfg.cif_threshold,
                                            tail_threshold=decode_cfg.tail_threshold, legacy_tail=False)
        hypotheses = beam_search(self.decoder, cif.fired, cif.fired_lengths, bos=self.bos, eos=self.eos,
                                 beam_size=decode_cfg.beam_size, banned=(self.blank, self.pad, self.bos),
                                 max_steps=decode_cfg.max_steps)
        return hypotheses, alpha, lengths
