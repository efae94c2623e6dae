"""One entry point for every teacher source: :func:`load_teacher`.

``source`` may be

1. a fairseq checkpoint file (``hubert_base_ls960.pt``, ``wav2vec_small.pt``) or a WavLM one
   (``WavLM-Base+.pt``),
2. a file in S3PRL's converted format,
3. an S3PRL upstream name (``"hubert_base"``, ``"wavlm_base_plus"``, or ``"s3prl:<name>"``),
   built by S3PRL's own hub entry (which downloads in real use), or
4. a local Hugging Face transformers HuBERT directory (``config.json`` + weights).

Files and directories never run pickled code and never import fairseq; all four end in S3PRL's
own model class inside a frozen :class:`Teacher`.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from typing import Any, Mapping, Optional, Union

from torch import nn

from recycle_distill.training.teacher.fairseq_checkpoint import read_teacher_checkpoint
from recycle_distill.training.teacher.hf_checkpoint import is_hf_model_dir, read_hf_hubert_dir
from recycle_distill.training.teacher.span_masks import SpanMaskConfig
from recycle_distill.training.teacher.s3prl_models import (
    TeacherCheckpointError,
    build_s3prl_model,
    kind_of_model,
)
from recycle_distill.training.teacher.teacher import Teacher

logger = logging.getLogger(__name__)

__all__ = ["load_teacher", "load_teacher_from_hub", "HUB_PREFIX"]

PathLike = Union[str, os.PathLike]
HUB_PREFIX = "s3prl:"
_HUB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _mask_config(model: nn.Module, overrides: Optional[Mapping[str, Any]]) -> Optional[SpanMaskConfig]:
    """The model's own masking cfg updated with fairseq-named ``overrides`` (e.g. a YAML teacher section)."""
    if not overrides:
        return None
    return SpanMaskConfig.from_cfg(overrides, base=SpanMaskConfig.from_model(model))


def load_teacher(
    source: PathLike,
    *,
    mask_overrides: Optional[Mapping[str, Any]] = None,
    normalize: Optional[bool] = None,
    hub: Any = None,
    hub_kwargs: Optional[Mapping[str, Any]] = None,
) -> Teacher:
    """Build a frozen :class:`Teacher` from any supported source (see module doc).

    Args:
        source: checkpoint file, Hugging Face directory, or S3PRL upstream name.
        mask_overrides: fairseq-named masking keys (``mask_prob``, ``mask_length``,
            ``mask_selection``, ``mask_other``, ``no_mask_overlap``, ``mask_min_space``) that
            replace the checkpoint's own; a recipe's whole ``teacher:`` section may be passed.
        normalize: override the per-utterance wave normalisation flag of the source.
        hub: the namespace upstream names are looked up in (default ``s3prl.hub``).
        hub_kwargs: keyword arguments for the hub entry (e.g. ``refresh``).

    Raises:
        TeacherCheckpointError: unreadable / unknown checkpoint, weights that do not fit.
        ValueError: a name that is neither an existing path nor an upstream name.
    """
    text = os.fspath(source)
    if text.startswith(HUB_PREFIX):
        return load_teacher_from_hub(text[len(HUB_PREFIX):], hub=hub, mask_overrides=mask_overrides,
                                     normalize=normalize, **dict(hub_kwargs or {}))
    if os.path.isdir(text):
        if not is_hf_model_dir(text):
            raise TeacherCheckpointError(f"{text}: a directory teacher must be a Hugging Face model dir (config.json)")
        spec = read_hf_hubert_dir(text, normalize=normalize)
    elif os.path.isfile(text):
        spec = read_teacher_checkpoint(text)
        if normalize is not None:
            spec.normalize = bool(normalize)
    elif _HUB_NAME.fullmatch(text):
        return load_teacher_from_hub(text, hub=hub, mask_overrides=mask_overrides, normalize=normalize,
                                     **dict(hub_kwargs or {}))
    else:
        raise ValueError(f"teacher source {text!r}: no such file or directory, and not an S3PRL upstream name")
    model = build_s3prl_model(spec)
    return Teacher(model, normalize=spec.normalize, mask_config=_mask_config(model, mask_overrides), source=text)


def _default_hub() -> Any:
    # s3prl.hub imports torchaudio-dependent upstreams; the compat layer must come first.
    from recycle_distill.s3prl.compat import apply_compat

    apply_compat()
    import s3prl.hub

    return s3prl.hub


def load_teacher_from_hub(
    name: str,
    *,
    hub: Any = None,
    mask_overrides: Optional[Mapping[str, Any]] = None,
    normalize: Optional[bool] = None,
    **kwargs: Any,
) -> Teacher:
    """A :class:`Teacher` from S3PRL's own upstream entry ``getattr(hub, name)(**kwargs)``.

    The entry returns S3PRL's ``UpstreamExpert``; its ``.model`` (S3PRL's HubertModel / WavLM /
    Wav2Vec2Model) becomes the teacher, and its task cfg's ``normalize`` flag is kept.
    """
    hub = _default_hub() if hub is None else hub
    entry = getattr(hub, name, None)
    if entry is None or not callable(entry):
        names = [n for n in dir(hub) if not n.startswith("_")]
        close = difflib.get_close_matches(name, names, n=5)
        raise ValueError(f"S3PRL has no upstream named {name!r}" + (f"; close matches: {close}" if close else ""))
    expert = entry(**kwargs)
    model = getattr(expert, "model", None)
    if not isinstance(model, nn.Module) or kind_of_model(model) is None:
        # Any other model class: S3PRL's own upstream and its hidden_states (no masked pass).
        from recycle_distill.training.teacher.upstream_teacher import UpstreamTeacher

        logger.info("S3PRL upstream %r: model %s is not a known class; using its hidden_states",
                    name, type(model).__name__)
        return UpstreamTeacher(expert, source=f"{HUB_PREFIX}{name}")
    if normalize is None:
        task_cfg = getattr(expert, "task_cfg", None) or getattr(expert, "cfg", None)
        normalize = bool(getattr(task_cfg, "normalize", False))
    encoder = model.encoder
    if hasattr(encoder, "required_seq_len_multiple"):
        encoder.required_seq_len_multiple = 1
    model.eval()
    logger.info("S3PRL upstream %r: %s teacher (%s)", name, kind_of_model(model), type(model).__name__)
    return Teacher(model, normalize=normalize, mask_config=_mask_config(model, mask_overrides),
                   source=f"{HUB_PREFIX}{name}")
