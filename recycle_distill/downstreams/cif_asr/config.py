"""Typed configuration of the CIF recognizer: model sizes, loss weights, decoding.

Every size of ``docs/cif.md`` is a key here, with the published CIF-HieraDist values as defaults
(adapted to sit on an S3PRL featurizer: a Linear then three 2-layer Conformer stacks). The loss
defaults are plain CIF (ACD and LRD off); the paper's HieraDist sets ``acd: 1.0, lrd: 0.01``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

__all__ = ["CifConfigError", "ModelConfig", "LossConfig", "DecodeConfig", "CifAsrConfig"]


class CifConfigError(ValueError):
    """A CIF recognizer config that cannot be used; the message names the key."""


def _suggest(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _build(cls, section: str, data: Optional[Mapping[str, Any]]):
    """``cls(**data)`` refusing keys it does not have (naming the closest) and non-mappings."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise CifConfigError(f"{section}: expected a mapping of keys, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            raise CifConfigError(f"{section}.{key}: unknown key{_suggest(str(key), names)}")
    config = cls(**dict(data))
    config.check(section)
    return config


def _require(condition: bool, section: str, key: str, value: Any, wanted: str) -> None:
    if not condition:
        raise CifConfigError(f"{section}.{key}: {wanted}, got {value!r}")


def _positive_int(config, section: str, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        _require(ok, section, key, value, "a positive integer")


def _probability(config, section: str, *keys: str) -> None:
    """Dropouts and label smoothing: a float in [0, 1)."""
    for key in keys:
        value = getattr(config, key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0
        _require(ok, section, key, value, "a number in [0, 1)")


def _non_negative(config, section: str, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        _require(ok, section, key, value, "a finite number >= 0")


@dataclass
class ModelConfig:
    """Sizes of :class:`~recycle_distill.downstreams.cif_asr.model.CifRecognizer`.

    Attributes:
        d_model: width of the encoder, the CIF and the decoder.
        conformer_stacks, conformer_layers: stacks of ``conformer_layers`` Conformer layers with
            x2 max-pooling between consecutive stacks.
        conformer_heads, conformer_ffn, conformer_kernel, conformer_dropout: each Conformer layer.
        cif_min_frame_ms, cif_max_frame_ms: the frame period the CIF must see; the number of x2
            poolings is the smallest that brings the upstream's period into this window.
        predictor_channels, predictor_kernel, predictor_dropout: the CIF weight predictor.
        cif_threshold: the integrate-and-fire threshold.
        decoder_layers, decoder_heads, decoder_ffn, decoder_dropout: the autoregressive decoder.
        embed_scale: the token embedding is multiplied by this before joining the CIF vector.
    """

    d_model: int = 256
    conformer_stacks: int = 3
    conformer_layers: int = 2
    conformer_heads: int = 4
    conformer_ffn: int = 1024
    conformer_kernel: int = 15
    conformer_dropout: float = 0.1
    cif_min_frame_ms: float = 60.0
    cif_max_frame_ms: float = 100.0
    predictor_channels: int = 256
    predictor_kernel: int = 3
    predictor_dropout: float = 0.2
    cif_threshold: float = 0.99
    decoder_layers: int = 2
    decoder_heads: int = 4
    decoder_ffn: int = 1024
    decoder_dropout: float = 0.1
    embed_scale: float = 16.0

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]], section: str = "model") -> "ModelConfig":
        return _build(cls, section, data)

    def check(self, section: str = "model") -> None:
        _positive_int(self, section, "d_model", "conformer_stacks", "conformer_layers", "conformer_heads",
                      "conformer_ffn", "conformer_kernel", "predictor_channels", "predictor_kernel",
                      "decoder_layers", "decoder_heads", "decoder_ffn")
        _probability(self, section, "conformer_dropout", "predictor_dropout", "decoder_dropout")
        _non_negative(self, section, "cif_min_frame_ms", "cif_max_frame_ms", "embed_scale")
        for key in ("conformer_heads", "decoder_heads"):
            _require(self.d_model % getattr(self, key) == 0, section, key, getattr(self, key),
                     f"a divisor of d_model ({self.d_model})")
        _require(self.conformer_kernel % 2 == 1, section, "conformer_kernel", self.conformer_kernel,
                 "an odd kernel size (same-length depthwise convolution)")
        _require(self.predictor_kernel % 2 == 1, section, "predictor_kernel", self.predictor_kernel,
                 "an odd kernel size (same-length convolution)")
        _require(0 < self.cif_min_frame_ms, section, "cif_min_frame_ms", self.cif_min_frame_ms, "a period > 0 ms")
        # A window narrower than x2 could miss every power of two of some upstream periods; that is
        # allowed (the rate check then refuses those upstreams by name), only an empty one is not.
        _require(self.cif_max_frame_ms >= self.cif_min_frame_ms, section, "cif_max_frame_ms",
                 self.cif_max_frame_ms, f"a period >= cif_min_frame_ms ({self.cif_min_frame_ms})")
        _require(0.0 < self.cif_threshold <= 1.0, section, "cif_threshold", self.cif_threshold, "a number in (0, 1]")


@dataclass
class LossConfig:
    """Weights of the summed loss terms (the total is divided by the number of target tokens).

    Attributes:
        label_smoothing: of the decoder's cross-entropy.
        quantity, ctc, acd, lrd: term weights; ``acd``/``lrd`` 0 = plain CIF (HieraDist: 1.0 / 0.01).
        acd_negatives: negatives per token for ACD (floor(0.8 N) when the batch has N <= this).
        acd_temperature: of the ACD InfoNCE.
    """

    label_smoothing: float = 0.1
    quantity: float = 1.0
    ctc: float = 0.5
    acd: float = 0.0
    lrd: float = 0.0
    acd_negatives: int = 700
    acd_temperature: float = 0.02

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]], section: str = "loss") -> "LossConfig":
        return _build(cls, section, data)

    def check(self, section: str = "loss") -> None:
        _probability(self, section, "label_smoothing")
        _non_negative(self, section, "quantity", "ctc", "acd", "lrd")
        _positive_int(self, section, "acd_negatives")
        ok = isinstance(self.acd_temperature, (int, float)) and self.acd_temperature > 0
        _require(ok, section, "acd_temperature", self.acd_temperature, "a number > 0")

    @property
    def needs_lm(self) -> bool:
        """Whether a language-model teacher must provide vectors (ACD or LRD switched on)."""
        return self.acd > 0 or self.lrd > 0


@dataclass
class DecodeConfig:
    """Beam search over the inference-mode CIF outputs.

    Attributes:
        beam_size: hypotheses kept per utterance (1 = greedy).
        tail_threshold: a leftover weight above this is emitted as a last firing (0.4 as the
            original decoding).
        max_steps: guard: utterances firing more often than this are decoded over their first
            ``max_steps`` firings only (a warning is logged).
    """

    beam_size: int = 10
    tail_threshold: float = 0.4
    max_steps: int = 1000

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]], section: str = "decode") -> "DecodeConfig":
        return _build(cls, section, data)

    def check(self, section: str = "decode") -> None:
        _positive_int(self, section, "beam_size", "max_steps")
        ok = isinstance(self.tail_threshold, (int, float)) and 0.0 <= self.tail_threshold < 1.0
        _require(ok, section, "tail_threshold", self.tail_threshold, "a number in [0, 1)")


@dataclass
class CifAsrConfig:
    """The three sections together (``model:``, ``loss:``, ``decode:``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "CifAsrConfig":
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            raise CifConfigError(f"config: expected a mapping with model/loss/decode, got {type(data).__name__}")
        sections = ["model", "loss", "decode"]
        for key in data:
            if key not in sections:
                raise CifConfigError(f"{key}: unknown section{_suggest(str(key), sections)}")
        return cls(
            model=ModelConfig.from_dict(data.get("model")),
            loss=LossConfig.from_dict(data.get("loss")),
            decode=DecodeConfig.from_dict(data.get("decode")),
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)
