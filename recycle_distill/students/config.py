"""Typed student configuration, read from the ``distiller:`` section of a reference YAML.

The reference training YAMLs hold the architecture in a ``distiller:`` section whose list
values are Python-literal strings; :func:`parse_literal` reads them without ``eval``.
Unknown keys warn (the reference sections carry training-only keys); wrong types fail. The
checks use the package's one config checker (:mod:`recycle_distill.util.config_check`), whose
:class:`ConfigError` is re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import yaml

from recycle_distill.util.config_check import ConfigError, Range, check_type, is_number, unknown_keys
from recycle_distill.util.literal import parse_literal
from recycle_distill.util.messages import plain, short_repr
from recycle_distill.util.safe_yaml import safe_load_bounded

logger = logging.getLogger(__name__)

__all__ = ["StudentConfig", "ConfigError", "load_config_dict"]

ConvLayerSpec = tuple[int, int, int]

# Architecture-defining keys: a config without them would silently build the wrong model.
REQUIRED_KEYS = (
    "conv_feature_layers",
    "encoder_layers",
    "encoder_embed_dim",
    "encoder_ffn_embed_dim",
    "encoder_attention_heads",
)

# Keys the reference dataclass carried that have no effect on these students' inference, with
# the reference defaults. They are accepted, type-checked and kept for round trips in
# ``StudentConfig.inert`` (readable as attributes), but are not typed fields: nothing builds
# on them. Five of them must keep the one value these students implement (_check_values).
INERT_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default", "max_positions": 100000, "depthwise_conv_kernel_size": 31, "attn_type": "",
    "pos_enc_type": "abs", "fp16": True, "final_dim": 256, "init_conv_layers": False, "init_encoder_layers": 0,
    "checkpoint_activations": False, "freeze_student_mask": False, "update_teacher_mask": False,
    "encoder_layerdrop": 0.0, "layer_type": "transformer", "activation_fn": "gelu", "pos_conv_depth": 1,
    "tr_layer_type": "conv1d",
}
INERT_KEYS = tuple(INERT_DEFAULTS)


MAX_LAYERS = 256
# Every whole number of a config (sizes, counts, indices) stays within this, so torch can take
# it as a size (a larger one ends as a raw OverflowError deep inside a layer's constructor).
MAX_SIZE = 2**31 - 1
POSITIVE = Range(0, None, low_closed=False)
AT_LEAST_ONE = Range(1)


@dataclass
class StudentConfig:
    """Architecture of a Recycle-and-Distill student (reference ``distiller:`` names).

    Shapes follow the reference: CNN ``conv_feature_layers`` as (dim, kernel, stride),
    a post-LN transformer of ``encoder_layers`` x ``encoder_embed_dim``.
    """

    conv_feature_layers: list[ConvLayerSpec]
    encoder_layers: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: int
    encoder_attention_heads: int

    conv_bias: bool = False
    feature_grad_mult: float = 1.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    layer_norm_first: bool = False
    layer_grad_scale: bool = False
    reuse_pattern: Optional[list[bool]] = None
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    dropout_input: float = 0.05
    pred_head_final_dim: int = 768
    pred_head_inter_dim: int = 0
    layerwise_proj: bool = True
    pred_layer_id: list[int] = field(default_factory=lambda: [11])
    enable_tr_layer: bool = False
    tr_conv1d_kernel: int = 2
    tr_layer_index: int = 0
    tr_reduce_factor: int = 2
    required_seq_len_multiple: int = 1
    crop_seq_to_multiple: int = 1

    # Our own options (not in the reference).
    reference_batched_reuse: bool = False
    """Reproduce the reference's (batch, head) attention-map pairing bug (docs/students.md §9)."""
    per_utterance_cnn: bool = False
    """Run the CNN one utterance at a time so batched features equal single-utterance ones."""

    inert: dict = field(default_factory=lambda: dict(INERT_DEFAULTS), repr=False)
    """The reference's inert keys (:data:`INERT_DEFAULTS`), kept for round trips only."""

    def __post_init__(self) -> None:
        self.inert = {**INERT_DEFAULTS, **self.inert}
        self._check_types()
        self._check_values()

    def __getattr__(self, name: str) -> Any:
        """Inert keys read like fields (``config.extractor_mode``); only called for missing names."""
        inert = self.__dict__.get("inert")
        if inert is not None and name in INERT_DEFAULTS:
            return inert[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "StudentConfig":
        """Build from a ``distiller:`` dict, or a whole training YAML dict that has one.

        String-valued list keys are parsed safely; unknown keys are logged and ignored.
        """
        source = plain(source)  # a path or a description: one line, bounded, in every message
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        if "distiller" in data:
            data = data["distiller"]
            if not isinstance(data, Mapping):
                raise ConfigError(f"{source}: 'distiller' section must be a mapping")
        typed = {f.name for f in dataclasses.fields(cls)} - {"inert"}
        unknown = sorted(str(key) for key in unknown_keys(set(data), typed | set(INERT_DEFAULTS)))
        if unknown:
            logger.warning("%s: ignoring unknown distiller keys: %s", source, short_repr(", ".join(unknown), 500))
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ConfigError(f"{source}: missing required distiller key(s): {', '.join(missing)}")
        values: dict[str, Any] = {k: v for k, v in data.items() if k in typed}
        values["inert"] = {k: v for k, v in data.items() if k in INERT_DEFAULTS}
        for key in ("conv_feature_layers", "reuse_pattern", "pred_layer_id"):
            if isinstance(values.get(key), str):
                text = values[key].strip()
                try:
                    values[key] = None if text in ("", "None") else parse_literal(text, key)
                except ValueError as err:  # bounded and never eval'd: a clear config error
                    raise ConfigError(f"{source}: {err}") from None
        if values.get("conv_feature_layers") is not None:
            values["conv_feature_layers"] = [
                tuple(spec) if isinstance(spec, (list, tuple)) else spec
                for spec in values["conv_feature_layers"]
            ]
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (lists, not literal strings; inert keys included), accepted back by
        :meth:`from_dict`."""
        out = dataclasses.asdict(self)
        out.update(out.pop("inert"))
        out["conv_feature_layers"] = [list(spec) for spec in self.conv_feature_layers]
        return out

    # ------------------------------------------------------------- validation
    def _check_types(self) -> None:
        """Every typed field and inert key in its type (the shared rules of :mod:`recycle_distill.util.coerce`)."""
        for f in dataclasses.fields(self):
            if f.name != "inert":
                setattr(self, f.name, _coerced(f.name, getattr(self, f.name), str(f.type)))
        for key, default in INERT_DEFAULTS.items():
            self.inert[key] = _coerced(key, self.inert[key], type(default).__name__)

    def _check_values(self) -> None:
        if not self.conv_feature_layers:
            raise ConfigError("config key 'conv_feature_layers': at least one conv layer is needed")
        for spec in self.conv_feature_layers:
            if len(spec) != 3 or not all(is_number(v, integer=True, within=POSITIVE) for v in spec):
                raise ConfigError(
                    f"config key 'conv_feature_layers': each entry must be (dim, kernel, stride) "
                    f"positive ints, got {short_repr(spec)}"
                )
        self._check_sizes()
        for key in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads"):
            if getattr(self, key) not in POSITIVE:
                raise ConfigError(f"config key '{key}': must be positive, got {short_repr(getattr(self, key))}")
        # Far beyond any speech model; a bound keeps a hostile config from building millions
        # of modules (sizes themselves are checked against the weights before allocation).
        if self.encoder_layers > MAX_LAYERS or len(self.conv_feature_layers) > MAX_LAYERS:
            raise ConfigError(f"config: more than {MAX_LAYERS} encoder or conv layers")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ConfigError(
                f"config key 'encoder_attention_heads': {self.encoder_attention_heads} does not divide "
                f"encoder_embed_dim {self.encoder_embed_dim}"
            )
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ConfigError(
                f"config key 'conv_pos_groups': {self.conv_pos_groups} does not divide "
                f"encoder_embed_dim {self.encoder_embed_dim}"
            )
        if self.reuse_pattern is not None:
            if len(self.reuse_pattern) != self.encoder_layers:
                raise ConfigError(
                    f"config key 'reuse_pattern': has {len(self.reuse_pattern)} entries for "
                    f"{self.encoder_layers} encoder layers"
                )
            if not self.reuse_pattern[0]:
                raise ConfigError("config key 'reuse_pattern': the first layer must compute attention (True)")
        unsupported = {
            "layer_norm_first": (self.layer_norm_first, False),
            "extractor_mode": (self.extractor_mode, "default"),
            "activation_fn": (self.activation_fn, "gelu"),
            "layer_type": (self.layer_type, "transformer"),
            "pos_conv_depth": (self.pos_conv_depth, 1),
            "pred_head_inter_dim": (self.pred_head_inter_dim, 0),
            "tr_layer_type": (self.tr_layer_type, "conv1d"),
        }
        for key, (value, supported) in unsupported.items():
            if value != supported:
                raise ConfigError(
                    f"config key '{key}': {short_repr(value)} is not supported by the Recycle-and-Distill "
                    f"students (only {supported!r})"
                )
        for key in ("required_seq_len_multiple", "crop_seq_to_multiple", "tr_reduce_factor", "tr_conv1d_kernel"):
            if getattr(self, key) not in AT_LEAST_ONE:
                raise ConfigError(f"config key '{key}': must be >= 1, got {short_repr(getattr(self, key))}")
        if self.enable_tr_layer and self.tr_layer_index != 0:
            raise ConfigError("config key 'tr_layer_index': only 0 (before the first layer) is supported")

    def _check_sizes(self) -> None:
        """Every whole number within +-:data:`MAX_SIZE` (the conv specs' too), naming the key."""
        values = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "inert"]
        values += list(self.inert.items())
        for key, value in values:
            items = value if key in ("pred_layer_id",) and isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_SIZE:
                    bound = f"at most {MAX_SIZE}" if item > 0 else f"at least {-MAX_SIZE}"
                    raise ConfigError(f"config key '{key}': must be {bound}, got {short_repr(item)}")
        for spec in self.conv_feature_layers:
            if any(value > MAX_SIZE for value in spec):
                raise ConfigError(f"config key 'conv_feature_layers': sizes must be at most {MAX_SIZE}, "
                                  f"got {short_repr(spec)}")

    # ---------------------------------------------------------------- helpers
    @property
    def cnn_output_dim(self) -> int:
        return self.conv_feature_layers[-1][0]

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads


def _coerced(key: str, value: Any, annotation: str) -> Any:
    """``value`` in its type; the message names the whole annotation (``Optional`` included)."""
    return check_type(
        value, annotation,
        lambda _: f"config key '{key}': expected {annotation}, got {short_repr(value)} ({type(value).__name__})",
    )


def load_config_dict(source: Union[str, os.PathLike, Mapping[str, Any]]) -> tuple[dict, str]:
    """Read a YAML file (safe loader) or take a mapping; returns (dict, description)."""
    if isinstance(source, Mapping):
        return dict(source), "config dict"
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {plain(path)}")
    with open(path, encoding="utf-8") as handle:
        try:
            data = safe_load_bounded(handle)
        except yaml.YAMLError as err:
            detail = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
            raise ConfigError(f"{plain(path)}: not valid YAML: {plain(detail, 600)}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{plain(path)}: expected a YAML mapping at the top level")
    return dict(data), path
