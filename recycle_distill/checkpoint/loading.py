"""Load a student from a released Lightning checkpoint, a bare state dict or a compact file.

The family always comes from the caller (the entry point), never from the checkpoint's
pickled ``hyper_parameters``. The architecture comes from ``model_config`` (a ``-g`` YAML,
preset name or dict), from a compact file's metadata, or, failing both, from the family's
preset whose shapes match the weights exactly.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional, Union

import torch

from recycle_distill import families
from recycle_distill.students.build import ConfigSource, block_table, list_presets, resolve_config
from recycle_distill.students.config import ConfigError, StudentConfig
from recycle_distill.students import FAMILIES, StudentModel
from recycle_distill.checkpoint.state_dict_diff import diff_state_dicts
from recycle_distill.checkpoint.compact import is_safetensors, read_compact
from recycle_distill.checkpoint.finite import check_finite_on_load
from recycle_distill.checkpoint.hf_folder import read_hf_student
from recycle_distill.checkpoint.safe_load import CheckpointError, check_readable_file, safe_torch_load
from recycle_distill.util.messages import plain, short_repr
from recycle_distill.util.options import check_bool

logger = logging.getLogger(__name__)

__all__ = ["load_student", "read_student_state_dict", "LIGHTNING_PREFIX"]

LIGHTNING_PREFIX = "student_model."


def read_student_state_dict(
    path: Union[str, os.PathLike], *, allow_non_finite: bool = False
) -> tuple[dict[str, torch.Tensor], Optional[str], Optional[dict]]:
    """Student weights from any supported file -> (state_dict, family or None, config or None).

    Lightning checkpoints keep only ``student_model.*`` (prefix removed); teacher weights,
    optimizer state and hyper-parameters are ignored. A plain state dict is taken as is.
    Weights holding NaN or inf are refused unless ``allow_non_finite``
    (:func:`~recycle_distill.checkpoint.finite.check_finite_on_load`).
    """
    path = os.fspath(path)
    check_readable_file(path)
    if is_safetensors(path):
        state_dict, family, config = read_compact(path, allow_non_finite=allow_non_finite)
        return state_dict, family, config
    loaded = safe_torch_load(path)
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{plain(path)}: expected a dict checkpoint, got {type(loaded).__name__}")
    state_dict = loaded.get("state_dict", loaded)
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{plain(path)}: 'state_dict' is not a mapping")
    student = {k[len(LIGHTNING_PREFIX):]: v for k, v in state_dict.items() if k.startswith(LIGHTNING_PREFIX)}
    if not student:
        if any(k.startswith("teacher_model.") for k in state_dict):
            raise CheckpointError(f"{plain(path)}: a Lightning checkpoint without '{LIGHTNING_PREFIX}*' keys")
        student = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if not student:
        raise CheckpointError(f"{plain(path)}: no tensors found")
    check_finite_on_load(student, path, allow_non_finite)
    return dict(student), None, None


def load_student(
    ckpt: Union[str, os.PathLike],
    family: Optional[str] = None,
    model_config: Optional[ConfigSource] = None,
    *,
    blocks: str = "plain",
    allow_non_finite: bool = False,
    **overrides: Any,
) -> StudentModel:
    """Build the ``family`` student and load ``ckpt`` into it strictly; returns it in eval mode.

    Args:
        ckpt: Lightning ``.ckpt``, a ``.pt`` state dict, our compact ``.safetensors``, or a
            Hugging Face folder written by ``recycle-distill export --format hf``.
        family: ``armhubert``, ``maskhubert``, ``starhubert`` or ``fithubert``; may be None
            for a compact file or a Hugging Face folder (both name their family).
        model_config: the architecture (``-g`` YAML path, preset name, dict); optional for
            compact files and for weights that match one of the family's presets.
        blocks: ``"plain"`` or ``"fast"`` (the CPU inference blocks), as in
            :func:`~recycle_distill.students.build.build_student`.
        allow_non_finite: load weights holding NaN or inf (with a warning), to inspect them;
            refused otherwise unless ``RECYCLE_DISTILL_ALLOW_NON_FINITE=1``
            (:mod:`recycle_distill.checkpoint.finite`).
        overrides: distiller keys to replace (e.g. ``reference_batched_reuse=True``).
    """
    allow_non_finite = check_bool(allow_non_finite, "allow_non_finite")
    table = block_table(blocks)
    path = os.fspath(ckpt)
    # A family given is checked before the file is read; a compact file or a Hugging Face folder
    # (recycle-distill export --format hf) names its own.
    if family is not None and family not in FAMILIES:
        raise CheckpointError(f"unknown student family {short_repr(family)}; known: {', '.join(FAMILIES)}")
    if os.path.isdir(path):
        state_dict, stored_family, stored_config = read_hf_student(path, allow_non_finite=allow_non_finite)
    else:
        state_dict, stored_family, stored_config = read_student_state_dict(path, allow_non_finite=allow_non_finite)
    if family is None and stored_family is None:
        raise CheckpointError(f"{plain(path)}: the file does not name its student family; pass one of "
                              f"{', '.join(FAMILIES)} (family=..., --family)")
    family = family or stored_family
    if family not in FAMILIES:
        raise CheckpointError(f"{plain(path)}: holds an unknown student family {short_repr(family)}; "
                              f"known: {', '.join(FAMILIES)}")
    if stored_family is not None and stored_family != family:
        raise CheckpointError(f"{plain(path)}: holds a {plain(stored_family, 100)} student, but the {family} entry "
                              f"was asked to load it")
    # Keys a released checkpoint may carry that the family's model does not have (the row says which).
    for prefix in families.family(family).dropped_keys:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}

    if model_config is not None:
        config, _ = resolve_config(model_config, family, **overrides)
    elif stored_config is not None:
        try:
            config, _ = resolve_config({"distiller": stored_config}, family, **overrides)
        except ConfigError as err:
            raise CheckpointError(f"{plain(path)}: its stored config is refused: {err}") from None
    else:
        config = _config_from_matching_preset(path, state_dict, family, overrides)

    # Shapes first, on the meta device (no memory): the config may come from the file itself,
    # and a crafted one could ask for a model far larger than its weights.
    with torch.device("meta"):
        try:
            empty = FAMILIES[family](config)
        except (OverflowError, RuntimeError, TypeError, ValueError, MemoryError) as err:
            # Sizes each within the config's bound whose product no tensor can hold.
            raise CheckpointError(f"{plain(path)}: its config asks for a model too large to build "
                                  f"({short_repr(str(err).strip().splitlines()[0] if str(err).strip() else err, 160)})"
                                  ) from None
        _check_layout(empty, state_dict, path)
    model = FAMILIES[family](config, blocks=table)
    _load_strict(model, state_dict, path)
    model.eval()
    return model


def _load_strict(model: StudentModel, state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    _check_layout(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True)


def _check_layout(model: StudentModel, state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    """Raise CheckpointError listing missing/unexpected keys and shape mismatches."""
    diff = diff_state_dicts(model.state_dict(), state_dict)
    if diff:
        lines = [f"{plain(path)}: checkpoint does not match the {model.family} config"]
        raise CheckpointError("\n".join(lines + [f"  {part}" for part in diff.parts()]))


def _config_from_matching_preset(
    path: str, state_dict: Mapping[str, torch.Tensor], family: str, overrides: Mapping[str, Any]
) -> StudentConfig:
    """The family preset whose state-dict layout equals the checkpoint's, else a clear error."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    for name in list_presets():
        config, preset_family = resolve_config(name, **overrides)
        if preset_family != family:
            continue
        with torch.device("meta"):  # shapes only: no memory, no random init
            model = FAMILIES[family](config)
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            logger.info("%s: no model config given; its weights match preset '%s'", path, name)
            return config
    raise CheckpointError(
        f"{plain(path)}: no model config given and the weights match no {family} preset; "
        f"pass the architecture YAML (-g / model_config)"
    )
