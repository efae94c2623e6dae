"""Read teacher checkpoint files without fairseq and without running pickled code.

Layouts recognised (all read through :func:`safe_torch_load`, ``weights_only=True``):

* ``fairseq``: what ``fairseq.checkpoint_utils.save_checkpoint`` writes, e.g.
  ``hubert_base_ls960.pt`` / ``wav2vec_small.pt``: ``{"cfg": {"model": {"_name": ...}, "task": ...},
  "model": state_dict, "task_state": {"dictionaries": [Dictionary]}, ...}``. Older files keep
  an ``argparse.Namespace`` under ``"args"`` instead of ``"cfg"``.
* ``wavlm``: Microsoft's ``WavLM-Base+.pt`` (also S3PRL's converted WavLM):
  ``{"cfg": flat WavLMConfig dict, "model": state_dict}``.
* ``s3prl_converted``: S3PRL's ``convert.py`` output: ``{"task_cfg", "model_cfg",
  "model_weight"[, "dictionaries_symbols"]}`` (HuBERT has the dictionaries, wav2vec 2.0 not).

The kind (hubert / wavlm / wav2vec2) comes from the cfg's ``_name`` (or ``arch``), else from
tell-tale state-dict keys; anything else raises :class:`TeacherCheckpointError` naming the
file and what was found. :func:`convert_to_s3prl` writes S3PRL's converted format, so S3PRL's
own ``hubert_local`` / ``wav2vec2_local`` can read a fairseq teacher without fairseq either.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Mapping, Optional, Union

import torch

from recycle_distill.checkpoint.safe_load import safe_torch_load
from recycle_distill.training.teacher.s3prl_models import KINDS, TeacherCheckpointError, TeacherSpec

logger = logging.getLogger(__name__)

__all__ = ["read_teacher_checkpoint", "spec_from_checkpoint", "detect_kind", "convert_to_s3prl"]

PathLike = Union[str, os.PathLike]

# cfg ``_name`` / ``arch`` values -> kind. Fine-tuned variants (hubert_ctc, wav2vec_ctc, ...)
# wrap the encoder in another model and are deliberately not listed.
NAME_TO_KIND = {
    "hubert": "hubert",
    "hubert_base": "hubert",
    "hubert_large": "hubert",
    "wav2vec2": "wav2vec2",
    "wav2vec2_base": "wav2vec2",
    "wav2vec2_large": "wav2vec2",
    "wavlm": "wavlm",
}

# Fields only WavLM's flat cfg has (fairseq HuBERT / wav2vec 2.0 have none of them).
WAVLM_CFG_FIELDS = ("relative_position_embedding", "gru_rel_pos", "num_buckets", "max_distance")


def _kind_from_keys(keys: list[str]) -> Optional[str]:
    """Guess the kind from state-dict keys that only one of the architectures has."""
    if any(".relative_attention_bias." in k or ".grep_linear." in k for k in keys):
        return "wavlm"
    if "label_embs_concat" in keys:
        return "hubert"
    if any(k.startswith(("quantizer.", "project_q.")) for k in keys):
        return "wav2vec2"
    return None


def detect_kind(model_cfg: Mapping[str, Any], keys: list[str], source: str) -> str:
    """The teacher kind from a model cfg (``_name`` / ``arch``) or, failing that, the weights.

    Raises:
        TeacherCheckpointError: the kind is unknown (the message shows what was found).
    """
    name = model_cfg.get("_name") or model_cfg.get("arch")
    if name is not None:
        kind = NAME_TO_KIND.get(str(name))
        if kind is None:
            raise TeacherCheckpointError(
                f"{source}: unknown teacher kind: the checkpoint's model cfg says _name={name!r}; "
                f"supported: {sorted(set(NAME_TO_KIND))} (pretrained, not fine-tuned, encoders)"
            )
        return kind
    if any(f in model_cfg for f in WAVLM_CFG_FIELDS):
        return "wavlm"
    kind = _kind_from_keys(keys)
    if kind is None:
        raise TeacherCheckpointError(
            f"{source}: unknown teacher kind: no model name in the cfg (cfg keys: {sorted(model_cfg)[:12]}) "
            f"and no HuBERT / WavLM / wav2vec 2.0 specific weights (first keys: {keys[:6]}); "
            f"supported kinds: {KINDS}"
        )
    return kind


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, argparse.Namespace):
        return dict(vars(value))
    if isinstance(value, Mapping):
        return dict(value)
    return {}


def _state_dict(value: Any, source: str, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping) or not value or not all(isinstance(v, torch.Tensor) for v in value.values()):
        raise TeacherCheckpointError(f"{source}: '{where}' is not a state dict of tensors")
    return dict(value)


def _dictionary_symbols(task_state: Any) -> Optional[list[list[Any]]]:
    """Symbols of fairseq ``Dictionary`` stand-ins (their pickled state), if present."""
    dictionaries = _as_dict(task_state).get("dictionaries")
    if not isinstance(dictionaries, (list, tuple)):
        return None
    symbols = []
    for dictionary in dictionaries:
        state = getattr(dictionary, "state", None)
        if not isinstance(state, Mapping) or "symbols" not in state:
            return None
        symbols.append(list(state["symbols"]))
    return symbols


def spec_from_checkpoint(checkpoint: Any, source: str) -> TeacherSpec:
    """A :class:`TeacherSpec` from an already-loaded checkpoint object (see module doc)."""
    if not isinstance(checkpoint, Mapping):
        raise TeacherCheckpointError(
            f"{source}: unknown teacher checkpoint: expected a dict, found {type(checkpoint).__name__}"
        )
    top = sorted(str(k) for k in checkpoint)
    if "model_weight" in checkpoint and "model_cfg" in checkpoint:
        weights = _state_dict(checkpoint["model_weight"], source, "model_weight")
        model_cfg, task_cfg = _as_dict(checkpoint["model_cfg"]), _as_dict(checkpoint.get("task_cfg"))
        kind = detect_kind(model_cfg, list(weights), source)
        symbols = checkpoint.get("dictionaries_symbols")
        return TeacherSpec(kind, model_cfg, bool(task_cfg.get("normalize", False)), weights, source,
                           "s3prl_converted", task_cfg, symbols)
    if "model" not in checkpoint:
        raise TeacherCheckpointError(
            f"{source}: unknown teacher checkpoint layout: top-level keys {top}; expected a fairseq checkpoint "
            f"('cfg'/'args' + 'model'), a WavLM checkpoint ('cfg' + 'model') or S3PRL's converted format "
            f"('model_cfg' + 'model_weight')"
        )
    weights = _state_dict(checkpoint["model"], source, "model")
    cfg = _as_dict(checkpoint.get("cfg"))
    if isinstance(cfg.get("model"), Mapping) or isinstance(checkpoint.get("args"), argparse.Namespace):
        if isinstance(cfg.get("model"), Mapping):
            model_cfg, task_cfg = _as_dict(cfg["model"]), _as_dict(cfg.get("task"))
        else:  # pre-hydra fairseq: one flat Namespace holds model and task options
            model_cfg = task_cfg = _as_dict(checkpoint["args"])
        kind = detect_kind(model_cfg, list(weights), source)
        return TeacherSpec(kind, model_cfg, bool(task_cfg.get("normalize", False)), weights, source,
                           "fairseq", task_cfg, _dictionary_symbols(checkpoint.get("task_state")))
    if cfg and "conv_feature_layers" in cfg:
        kind = detect_kind(cfg, list(weights), source)
        return TeacherSpec(kind, cfg, bool(cfg.get("normalize", False)), weights, source, "wavlm", {}, None)
    raise TeacherCheckpointError(
        f"{source}: unknown teacher checkpoint: it has 'model' weights but no model cfg "
        f"(top-level keys {top}; cfg keys {sorted(cfg)[:12]})"
    )


def read_teacher_checkpoint(path: PathLike) -> TeacherSpec:
    """Read a teacher checkpoint file (fairseq / WavLM / S3PRL-converted) into a :class:`TeacherSpec`.

    Nothing in the pickle is executed: fairseq's ``Dictionary`` becomes an inert stand-in.

    Raises:
        TeacherCheckpointError / CheckpointError: unreadable file or unknown kind/layout.
    """
    source = os.fspath(path)
    spec = spec_from_checkpoint(safe_torch_load(source), source)
    logger.info("%s: %s teacher, %s layout, %d tensors", source, spec.kind, spec.layout, len(spec.state_dict))
    return spec


def convert_to_s3prl(path: PathLike, output_path: PathLike) -> str:
    """Write a fairseq / WavLM teacher in the format S3PRL's own loaders read.

    HuBERT and wav2vec 2.0 become ``{"task_cfg", "model_cfg", "model_weight"[,
    "dictionaries_symbols"]}`` (S3PRL's ``upstream/*/convert.py`` format, which its
    ``hubert_local`` / ``wav2vec2_local`` expect); WavLM keeps its own ``{"cfg", "model"}``
    layout, which is what S3PRL's ``wavlm_local`` reads. Returns the output path.
    """
    spec = read_teacher_checkpoint(path)
    if spec.kind == "wavlm":
        state: dict[str, Any] = {"cfg": spec.model_cfg, "model": spec.state_dict}
    else:
        state = {"task_cfg": spec.task_cfg, "model_cfg": spec.model_cfg, "model_weight": spec.state_dict}
        if spec.kind == "hubert":
            if spec.dictionaries_symbols is None:
                raise TeacherCheckpointError(f"{spec.source}: no label dictionaries; S3PRL's HuBERT format needs them")
            state["dictionaries_symbols"] = spec.dictionaries_symbols
    output_path = os.fspath(output_path)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    torch.save(state, output_path)
    return output_path
