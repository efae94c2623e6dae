"""Build S3PRL's own HuBERT / WavLM / wav2vec 2.0 model classes from a checkpoint's parts.

Every teacher source (fairseq file, S3PRL converted file, Hugging Face directory) is first
read into a :class:`TeacherSpec` -- kind, model cfg, preprocessing flag, state dict -- and
this module turns it into the S3PRL module with its weights loaded:

* ``hubert``   -> ``s3prl.upstream.hubert.hubert_model.HubertModel``
* ``wavlm``    -> ``s3prl.upstream.wavlm.WavLM.WavLM``
* ``wav2vec2`` -> ``s3prl.upstream.wav2vec2.wav2vec2_model.Wav2Vec2Model``

The teacher is only a feature extractor, so the pretraining heads (HuBERT's ``final_proj``,
``label_embs_concat``; wav2vec 2.0's quantizer and ``project_q``) are not built or loaded.

S3PRL's constructors ``eval`` the ``conv_feature_layers`` string of the cfg. A checkpoint is
untrusted input, so that string is first parsed with our literal-only parser and replaced by
the plain list it denotes: S3PRL then only ever evaluates a literal we wrote.

The cfg may also ask for a model far larger than its weights (200 layers of width 4096 next to
one tiny tensor: 160 GB). Its sizes are checked against the weights first (layer count, width),
then the model is built on the ``meta`` device (shapes only, nothing allocated) and compared
with the weights; only weights that fit are built for real and loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from recycle_distill.checkpoint.safe_load import TeacherCheckpointError  # noqa: F401  (re-exported)
from recycle_distill.checkpoint.state_dict_diff import describe_keys, diff_state_dicts
from recycle_distill.util.literal import parse_literal
from recycle_distill.util.messages import short_repr

logger = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "TeacherSpec",
    "TeacherCheckpointError",
    "build_s3prl_model",
    "kind_of_model",
    "conv_layers_of",
    "safe_conv_feature_layers",
]

KINDS = ("hubert", "wavlm", "wav2vec2")

# State-dict prefixes of pretraining-only modules, per kind (dropped before loading).
PRETRAINING_PREFIXES: dict[str, tuple[str, ...]] = {
    "hubert": ("final_proj.", "label_embs_concat", "target_glu."),
    "wavlm": (),
    "wav2vec2": ("quantizer.", "project_q.", "final_proj.", "target_glu."),
}


@dataclass
class TeacherSpec:
    """A teacher checkpoint's content, independent of its on-disk layout.

    Attributes:
        kind: one of :data:`KINDS`.
        model_cfg: architecture + masking fields (fairseq ``cfg.model`` names).
        normalize: whether the wave is layer-normalised per utterance before the CNN
            (fairseq ``task.normalize``; WavLM's ``cfg.normalize``).
        state_dict: weights in S3PRL's (= fairseq's) key names.
        source: a human-readable origin for messages, e.g. the file path.
        layout: which on-disk layout it came from (for logs).
        task_cfg: the task section, when the layout has one.
        dictionaries_symbols: HuBERT label dictionaries (only needed to write S3PRL's
            converted format).
    """

    kind: str
    model_cfg: dict[str, Any]
    normalize: bool
    state_dict: dict[str, torch.Tensor]
    source: str
    layout: str
    task_cfg: dict[str, Any] = field(default_factory=dict)
    dictionaries_symbols: Optional[list[list[Any]]] = None


def safe_conv_feature_layers(text: Any, source: str) -> list[tuple[int, int, int]]:
    """Parse a cfg ``conv_feature_layers`` string without ``eval``; validate (dim, kernel, stride)."""
    try:
        layers = parse_literal(text, key="conv_feature_layers") if isinstance(text, str) else text
    except (ValueError, TypeError) as err:
        raise TeacherCheckpointError(f"{source}: {err}") from None
    ok = isinstance(layers, (list, tuple)) and len(layers) > 0 and all(
        isinstance(layer, (list, tuple)) and len(layer) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in layer)
        for layer in layers
    )
    if not ok:
        raise TeacherCheckpointError(
            f"{source}: conv_feature_layers must be a non-empty list of (dim, kernel, stride) positive ints, "
            f"got {text!r}"
        )
    return [tuple(int(v) for v in layer) for layer in layers]  # type: ignore[misc]


def conv_layers_of(model_cfg: Mapping[str, Any], source: str = "<cfg>") -> list[tuple[int, int, int]]:
    """The (dim, kernel, stride) CNN layers of a teacher cfg."""
    if "conv_feature_layers" not in model_cfg:
        raise TeacherCheckpointError(f"{source}: the model cfg has no 'conv_feature_layers'")
    return safe_conv_feature_layers(model_cfg["conv_feature_layers"], source)


def _dataclass_kwargs(config_class: type, cfg: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The entries of ``cfg`` that ``config_class`` (an S3PRL cfg dataclass) has fields for."""
    names = {f.name for f in dataclasses.fields(config_class)}
    kept = {key: value for key, value in cfg.items() if key in names}
    ignored = sorted(key for key in cfg if key not in names and key != "_name")
    if ignored:
        # Newer fairseq versions add fields S3PRL's copy lacks; none of them change inference.
        logger.debug("%s: cfg fields not used by %s: %s", source, config_class.__name__, ignored)
    return kept


def _sanitised_cfg(spec: TeacherSpec) -> dict[str, Any]:
    cfg = dict(spec.model_cfg)
    layers = conv_layers_of(cfg, spec.source)
    # repr of a list of int tuples is a plain literal: the only thing S3PRL's eval will see.
    cfg["conv_feature_layers"] = repr([tuple(layer) for layer in layers])
    return cfg


def _instantiate(spec: TeacherSpec) -> nn.Module:
    cfg = _sanitised_cfg(spec)
    if spec.kind == "hubert":
        from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

        if "label_rate" not in cfg:
            cfg["label_rate"] = 50.0  # required by the dataclass, unused without targets
        model_cfg = HubertConfig(**_dataclass_kwargs(HubertConfig, cfg, spec.source))
        task_cfg = HubertPretrainingConfig(**_dataclass_kwargs(HubertPretrainingConfig, spec.task_cfg, spec.source))
        # dictionaries=[None]: S3PRL then skips the label embeddings (pretraining only).
        model = HubertModel(model_cfg, task_cfg, [None])
        model.remove_pretraining_modules()
        return model
    if spec.kind == "wavlm":
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        return WavLM(WavLMConfig(cfg))
    if spec.kind == "wav2vec2":
        from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

        model_cfg = Wav2Vec2Config(**_dataclass_kwargs(Wav2Vec2Config, cfg, spec.source))
        if model_cfg.quantize_input:
            raise TeacherCheckpointError(
                f"{spec.source}: wav2vec 2.0 with quantize_input=True is not supported as a teacher"
            )
        model = Wav2Vec2Model(model_cfg)
        model.remove_pretraining_modules()
        return model
    raise TeacherCheckpointError(f"{spec.source}: unknown teacher kind {spec.kind!r} (supported: {KINDS})")


CLASS_NAMES = {"hubert": "HubertModel", "wavlm": "WavLM", "wav2vec2": "Wav2Vec2Model"}
# Size keys of the three cfgs (fairseq names) and S3PRL's defaults for them (the same in all three).
SIZE_KEYS = {"encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
             "encoder_attention_heads": 12, "conv_pos": 128, "conv_pos_groups": 16}
MAX_SIZE = 2**20  # no size of a speech encoder comes near it; mask_emb is then 4 MB at most
_LAYER_KEY = re.compile(r"encoder\.layers\.(\d+)\.")


class _MetaStaysMeta(TorchFunctionMode):
    """Inside ``torch.device("meta")``: ``.cpu()`` of a meta tensor stays on meta (S3PRL's WavLM
    initialises weights through a CPU copy, which a meta tensor cannot give)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func is torch.Tensor.cpu and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _refuse(spec: TeacherSpec, detail: str) -> TeacherCheckpointError:
    return TeacherCheckpointError(
        f"{spec.source}: the weights do not fit S3PRL's {CLASS_NAMES.get(spec.kind, spec.kind)} built from its cfg; "
        f"{detail}"
    )


def _check_sizes(spec: TeacherSpec, weights: Mapping[str, torch.Tensor]) -> None:
    """The cfg's sizes are whole numbers of a sane size, and its layer count is the weights'.

    Cheap checks before any module is built: the meta build below still makes one Python module
    per layer and allocates the ``mask_emb`` parameter (``encoder_embed_dim`` floats) for real.
    """
    sizes = {}
    for key, default in SIZE_KEYS.items():
        value = spec.model_cfg.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
            raise TeacherCheckpointError(
                f"{spec.source}: the model cfg's '{key}' must be a whole number from 1 to {MAX_SIZE}, "
                f"got {short_repr(value)}"
            )
        sizes[key] = value
    layers = {int(match.group(1)) for key in weights if (match := _LAYER_KEY.match(key))}
    if len(layers) != sizes["encoder_layers"]:
        raise _refuse(spec, f"the cfg asks for {sizes['encoder_layers']} encoder layers (encoder_layers), "
                            f"the weights hold {len(layers)}")


def build_s3prl_model(spec: TeacherSpec) -> nn.Module:
    """The S3PRL model of ``spec.kind`` with ``spec.state_dict`` loaded (strictly), in eval mode.

    The shapes are compared on the ``meta`` device before anything is allocated (see module doc).

    Raises:
        TeacherCheckpointError: unknown kind, bad cfg, or weights that do not fit (the
            message lists the missing / unexpected / mis-shaped keys).
    """
    if spec.kind not in PRETRAINING_PREFIXES:
        raise TeacherCheckpointError(f"{spec.source}: unknown teacher kind {spec.kind!r} (supported: {KINDS})")
    dropped = [key for key in spec.state_dict if key.startswith(PRETRAINING_PREFIXES[spec.kind])]
    weights = {key: value for key, value in spec.state_dict.items() if key not in set(dropped)}
    _check_sizes(spec, weights)
    with torch.device("meta"), _MetaStaysMeta():
        shapes = _instantiate(spec)
    diff = diff_state_dicts(shapes.state_dict(), weights)
    del shapes
    if diff:
        raise _refuse(spec, "; ".join(diff.parts()))
    model = _instantiate(spec)
    if dropped:
        logger.info("%s: not loading %d pretraining-only tensors (%s)", spec.source, len(dropped), describe_keys(dropped, 3))
    model.load_state_dict(weights, strict=True)
    # Frames are only padded to a multiple for fused kernels; the padded keys are masked out,
    # so 1 gives the same outputs with less work (and is what the reference teacher ran with).
    encoder = getattr(model, "encoder", None)
    if encoder is not None and hasattr(encoder, "required_seq_len_multiple"):
        encoder.required_seq_len_multiple = 1
    model.eval()
    logger.info("%s: loaded %s teacher (%s layout) into %s.%s", spec.source, spec.kind, spec.layout,
                type(model).__module__, type(model).__name__)
    return model


def kind_of_model(model: nn.Module) -> Optional[str]:
    """``hubert`` / ``wavlm`` / ``wav2vec2`` for an instance of the S3PRL class, else None."""
    from s3prl.upstream.hubert.hubert_model import HubertModel
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Model
    from s3prl.upstream.wavlm.WavLM import WavLM

    for kind, cls in (("hubert", HubertModel), ("wavlm", WavLM), ("wav2vec2", Wav2Vec2Model)):
        if isinstance(model, cls):
            return kind
    return None
