"""Typed configuration of the ``cif_asr`` downstream: the ``downstream_expert:`` section of
``cif_asr.yaml``.

Two groups of sections:

* the recognizer's ``model`` / ``loss`` / ``decode`` (:class:`CifAsrConfig`): every size of
  ``docs/cif.md`` is a key, with the published CIF-HieraDist values as defaults (adapted to sit on
  an S3PRL featurizer: a Linear then three 2-layer Conformer stacks). The loss defaults are plain
  CIF (ACD and LRD off); the paper's HieraDist sets ``acd: 1.0, lrd: 0.01``;
* the expert's ``corpus`` / ``lm`` / ``data`` / ``spec_augment`` (:class:`ExpertSettings`, which
  holds all seven).

Every value is checked with the package's one config checker
(:mod:`recycle_distill.util.config_check`): an unknown key names the closest valid one, a number
of the wrong kind or range names the key, and every refusal is a :class:`ConfigError`.
Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

from recycle_distill.util.config_check import ConfigError, Range, check_known, is_number

__all__ = [
    "CORPORA", "DEFAULT_LANGUAGE", "UNIT_ERRORS", "CifAsrConfig", "CifConfigError", "ConfigError",
    "CorpusSettings", "DataSettings", "DecodeConfig", "ExpertSettings", "LanguageModelSettings",
    "LossConfig", "ModelConfig", "SpecAugmentSettings",
]

CifConfigError = ConfigError  # the name this module's error had; the same class

CORPORA = ("librispeech", "aishell")
DEFAULT_LANGUAGE = {"librispeech": "en", "aishell": "zh"}
UNIT_ERRORS = ("skip", "fail")

# Typos this close (difflib ratio) to a valid key are suggested; looser than the trainer's 0.6
# because these keys are short.
SUGGEST_CUTOFF = 0.5
PROBABILITY = Range(0.0, 1.0, high_closed=False)  # dropouts, label smoothing, the decoding tail


def _build(cls, section: str, data: Optional[Mapping[str, Any]]):
    """``cls(**data)`` refusing keys it does not have (naming the closest) and non-mappings."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section}: expected a mapping of keys, got {type(data).__name__}")
    check_known(data, [f.name for f in fields(cls)], lambda key, hint: f"{section}.{key}: unknown key{hint}",
                cutoff=SUGGEST_CUTOFF)
    config = cls(**dict(data))
    config.check(section)
    return config


def _check_sections(data: Mapping[str, Any], sections: tuple[str, ...], prefix: str = "") -> None:
    """Refuse a section name outside ``sections`` (``<prefix><name>: unknown section``)."""
    check_known(data, sections, lambda key, hint: f"{prefix}{key}: unknown section{hint}", cutoff=SUGGEST_CUTOFF)


def _require(condition: bool, section: str, key: str, value: Any, wanted: str) -> None:
    if not condition:
        raise ConfigError(f"{section}.{key}: {wanted}, got {value!r}")


def _numbers(config, section: str, keys: tuple[str, ...], wanted: str, **rule: Any) -> None:
    """Each key a number as :func:`~recycle_distill.util.config_check.is_number` ``(**rule)``
    says (never a bool), or a :class:`ConfigError` saying ``wanted``."""
    for key in keys:
        value = getattr(config, key)
        _require(is_number(value, **rule), section, key, value, wanted)


def _positive_int(config, section: str, *keys: str) -> None:
    _numbers(config, section, keys, "a positive integer", integer=True, within=Range(1))


def _probability(config, section: str, *keys: str) -> None:
    """Dropouts and label smoothing: a float in [0, 1)."""
    _numbers(config, section, keys, f"a number in {PROBABILITY}", within=PROBABILITY)


def _non_negative(config, section: str, *keys: str) -> None:
    _numbers(config, section, keys, "a finite number >= 0", finite=True, within=Range(0))

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
        _numbers(self, section, ("cif_threshold",), "a number in (0, 1]", within=Range(0.0, 1.0, low_closed=False))


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
        _numbers(self, section, ("acd_temperature",), "a number > 0", within=Range(0.0, low_closed=False))

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
        _numbers(self, section, ("tail_threshold",), f"a number in {PROBABILITY}", within=PROBABILITY)


@dataclass
class CifAsrConfig:
    """The three sections together (``model:``, ``loss:``, ``decode:``)."""

    SECTIONS = ("model", "loss", "decode")

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "CifAsrConfig":
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: expected a mapping with model/loss/decode, got {type(data).__name__}")
        _check_sections(data, cls.SECTIONS)
        return cls(
            model=ModelConfig.from_dict(data.get("model")),
            loss=LossConfig.from_dict(data.get("loss")),
            decode=DecodeConfig.from_dict(data.get("decode")),
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)


def _as_list(text: str) -> list:
    """``"a"``, ``"a,b"`` or ``"[a, b]"`` (how S3PRL's ``-o`` hands over an unquoted list) -> names."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return [part.strip().strip("'\"") for part in inner.split(",") if part.strip()]


@dataclass
class CorpusSettings:
    """Where the audio and transcripts are.

    Attributes:
        name: ``librispeech`` or ``aishell``.
        root: LibriSpeech: the folder holding the subsets; AISHELL-1: the folder holding
            ``wav/`` and ``transcript/``.
        train, dev, test: the subsets (LibriSpeech, e.g. ``[train-clean-100]``) or splits
            (AISHELL-1: ``[train]``) behind S3PRL's split names.
        language: ``en`` or ``zh``; by default LibriSpeech is English and AISHELL-1 Chinese.
        unit_error: a transcript unit the language model's tokenizer splits or does not know:
            ``skip`` the utterance (counted and logged) or ``fail`` before training.
    """

    name: str = "librispeech"
    root: str = ""
    train: list = field(default_factory=lambda: ["train-clean-100"])
    dev: list = field(default_factory=lambda: ["dev-clean"])
    test: list = field(default_factory=lambda: ["test-clean"])
    language: Optional[str] = None
    unit_error: str = "skip"

    def check(self, section: str) -> None:
        _require(self.name in CORPORA, section, "name", self.name, f"one of {', '.join(CORPORA)}")
        _require(isinstance(self.root, str) and bool(self.root), section, "root", self.root,
                 "the corpus folder (set it with -o config.downstream_expert.corpus.root=...)")
        _require(self.unit_error in UNIT_ERRORS, section, "unit_error", self.unit_error, f"one of {', '.join(UNIT_ERRORS)}")
        _require(self.language in (None, "en", "zh"), section, "language", self.language, "en, zh or null")
        for split in ("train", "dev", "test"):
            value = getattr(self, split)
            if isinstance(value, str):
                value = _as_list(value)
                setattr(self, split, value)
            _require(isinstance(value, list) and all(isinstance(v, str) for v in value) and value,
                     section, split, value, "a non-empty list of subset names")

    def subsets(self, split: str) -> list:
        """The corpus subsets behind an S3PRL split name (``train``, ``dev``, ``test``)."""
        if split not in ("train", "dev", "test"):
            raise ConfigError(f"unknown split {split!r}: cif_asr has train, dev and test "
                                 "(use those names in runner.eval_dataloaders and -t)")
        return getattr(self, split)


@dataclass
class LanguageModelSettings:
    """The language model whose tokens are the targets and whose vectors are distilled.

    Attributes:
        path: a local Hugging Face model folder (``AutoModel`` + ``AutoTokenizer``, offline).
        feature_cache: a ``recycle-distill cif-prepare`` cache folder; ``null`` computes the
            vectors on the fly (only when ACD or LRD is on).
        batch_size: sequences per language-model pass when computing on the fly.
    """

    path: str = ""
    feature_cache: Optional[str] = None
    batch_size: int = 64

    def check(self, section: str) -> None:
        _require(isinstance(self.path, str) and bool(self.path), section, "path", self.path,
                 "a local Hugging Face model folder (its tokenizer defines the units)")
        _positive_int(self, section, "batch_size")


@dataclass
class DataSettings:
    """Batching. ``max_seconds`` caps the audio of a batch (None: only ``batch_size`` counts)."""

    batch_size: int = 8
    eval_batch_size: int = 8
    max_seconds: Optional[float] = None
    num_workers: int = 0
    seed: int = 0

    def check(self, section: str) -> None:
        _positive_int(self, section, "batch_size", "eval_batch_size")
        _numbers(self, section, ("num_workers", "seed"), "an integer >= 0", integer=True, within=Range(0))
        if self.max_seconds is not None:
            _numbers(self, section, ("max_seconds",), "null or a number of seconds > 0",
                     within=Range(0.0, low_closed=False))


@dataclass
class SpecAugmentSettings:
    """SpecAugment's masks on the recognizer's input features, in training only (off by default).

    Widths are in the original's units, an ``reference_dim``-channel fbank at ``reference_frame_ms``
    frames (80, 10 ms), and :mod:`.spec_augment` scales them to the features fed (``D`` channels
    at the upstream's frame period ``P`` ms): ``round(freq_width * D / reference_dim)`` channels,
    ``round(time_width * reference_frame_ms / P)`` frames.

    Attributes:
        enabled: apply the masks to training batches (never to dev/test).
        freq_masks, freq_width: masks per utterance across the feature channels, and the widest.
        time_masks, time_width: masks per utterance across its frames, and the widest.
        max_time_ratio: a time mask covers at most this fraction of the utterance (1.0: no cap).
    """

    enabled: bool = False
    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 2
    time_width: int = 50
    reference_dim: int = 80
    reference_frame_ms: float = 10.0
    max_time_ratio: float = 1.0

    def check(self, section: str) -> None:
        _require(isinstance(self.enabled, bool), section, "enabled", self.enabled, "true or false")
        _numbers(self, section, ("freq_masks", "freq_width", "time_masks", "time_width"), "an integer >= 0",
                 integer=True, within=Range(0))
        _positive_int(self, section, "reference_dim")
        _numbers(self, section, ("reference_frame_ms",), "a number of milliseconds > 0",
                 within=Range(0.0, low_closed=False))
        _numbers(self, section, ("max_time_ratio",), "a number in (0, 1]", within=Range(0.0, 1.0, low_closed=False))


@dataclass
class ExpertSettings:
    """The whole ``downstream_expert:`` section: the expert's sections and the recognizer's."""

    corpus: CorpusSettings
    lm: LanguageModelSettings
    data: DataSettings
    recognizer: CifAsrConfig
    spec_augment: SpecAugmentSettings = field(default_factory=SpecAugmentSettings)

    SECTIONS = ("corpus", "lm", "data", "spec_augment", *CifAsrConfig.SECTIONS)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "ExpertSettings":
        data = dict(data or {})
        prefix = "downstream_expert"
        _check_sections(data, cls.SECTIONS, prefix=f"{prefix}.")
        return cls(
            corpus=_build(CorpusSettings, f"{prefix}.corpus", data.get("corpus")),
            lm=_build(LanguageModelSettings, f"{prefix}.lm", data.get("lm")),
            data=_build(DataSettings, f"{prefix}.data", data.get("data")),
            recognizer=CifAsrConfig.from_dict({k: data[k] for k in CifAsrConfig.SECTIONS if k in data}),
            spec_augment=_build(SpecAugmentSettings, f"{prefix}.spec_augment", data.get("spec_augment")),
        )
