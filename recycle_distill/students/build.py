"""Build students from presets, reference YAMLs or dicts; the family is inferred or given."""

from __future__ import annotations

import logging
import os
from importlib import resources
from typing import Any, Mapping, Optional, Union

from recycle_distill import families
from recycle_distill.students.config import ConfigError, StudentConfig, load_config_dict
from recycle_distill.students import FAMILIES, StudentModel
from recycle_distill.students.blocks.table import PLAIN, BlockTable
from recycle_distill.students.blocks.map_free import MAP_FREE_BLOCKS
from recycle_distill.inference.blocks.table import FAST_BLOCKS
from recycle_distill.util.messages import short_repr

logger = logging.getLogger(__name__)

__all__ = ["build_student", "list_presets", "resolve_config", "infer_family", "preset_path", "block_table", "BLOCKS"]

# The block choices of build_student / load_student (see block_table).
BLOCKS = ("plain", "fast", "map_free")

ConfigSource = Union[str, os.PathLike, Mapping[str, Any], StudentConfig]


def list_presets() -> list[str]:
    """Names of the published architectures that :func:`build_student` accepts."""
    folder = resources.files("recycle_distill.students") / "presets"
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def preset_path(name: str) -> str:
    """File path of a preset YAML (usable as a ``-g`` file)."""
    if name not in list_presets():
        raise ConfigError(f"unknown preset {short_repr(name)}; available: {', '.join(list_presets())}")
    return str(resources.files("recycle_distill.students") / "presets" / f"{name}.yaml")


def infer_family(distiller: Mapping[str, Any]) -> str:
    """``reuse_pattern`` -> armhubert; ``enable_tr_layer: true`` -> fithubert; else maskhubert.

    STaRHuBERT cannot be told apart from a config alone: ask for it by name.
    The rule is the table's: the first row (table order) whose ``inferred_from`` key is set
    (not None, empty, "None" or false), else :data:`recycle_distill.families.FALLBACK_FAMILY`.
    """
    for row in families.FAMILIES.values():
        if row.inferred_from is not None and _is_set(distiller.get(row.inferred_from)):
            return row.name
    return families.FALLBACK_FAMILY


def _is_set(value: Any) -> bool:
    """A distiller value that says something: not absent, empty, "None" or ``False``."""
    return value is not False and value not in (None, "", "None")


def resolve_config(
    source: ConfigSource, family: Optional[str] = None, **overrides: Any
) -> tuple[StudentConfig, str]:
    """Turn a preset name, YAML path, dict or config into ``(StudentConfig, family)``.

    ``overrides`` replace distiller keys (e.g. ``reference_batched_reuse=True``).
    A top-level ``family:`` key (our presets have one) is used when ``family`` is None.
    """
    if isinstance(source, StudentConfig):
        data: dict[str, Any] = {"distiller": source.to_dict()}
        where = "StudentConfig"
    elif isinstance(source, (str, os.PathLike)) and not os.path.exists(source) and str(source) in list_presets():
        data, where = load_config_dict(preset_path(str(source)))
        where = f"preset '{source}'"
    elif isinstance(source, (str, os.PathLike)) and not os.path.exists(source):
        raise ConfigError(
            f"{short_repr(os.fspath(source), 300)} is neither an existing config file nor a preset "
            f"({', '.join(list_presets())})"
        )
    else:
        data, where = load_config_dict(source)
    distiller = dict(data["distiller"]) if isinstance(data.get("distiller"), Mapping) else dict(data)
    distiller.pop("family", None)
    distiller.update(overrides)
    family = family or data.get("family") or infer_family(distiller)
    if family not in FAMILIES:
        raise ConfigError(f"unknown student family {short_repr(family)}; known: {', '.join(FAMILIES)}")
    if not families.family(family).reuses_attention and distiller.get("reuse_pattern") not in (None, "", "None"):
        logger.info("%s: ignoring reuse_pattern for family %s", where, family)
        distiller["reuse_pattern"] = None
    return StudentConfig.from_dict(distiller, source=where), family


def build_student(
    source: ConfigSource, family: Optional[str] = None, *, blocks: str = "plain", **overrides: Any
) -> StudentModel:
    """Build a bare student (random weights, heads and ``mask_emb`` included) in eval mode.

    Args:
        source: a preset name (:func:`list_presets`), a reference/our YAML path, a dict
            (whole training YAML or its ``distiller:`` section) or a :class:`StudentConfig`.
        family: ``armhubert``, ``maskhubert``, ``starhubert`` or ``fithubert``; inferred when None.
        blocks: ``"plain"`` (one code path each; training, export) or ``"fast"`` (the CPU
            inference blocks of :mod:`recycle_distill.inference.blocks`; same parameters and
            state dict) or ``"map_free"`` (reuse layers recompute the attention map block by
            block instead of storing it: memory linear in length, training included). See
            :func:`block_table`.
        overrides: distiller keys to replace, e.g. ``reference_batched_reuse=True``.
    """
    table = block_table(blocks)
    config, family = resolve_config(source, family, **overrides)
    model = FAMILIES[family](config, blocks=table)
    model.eval()
    return model


def block_table(blocks: str) -> BlockTable:
    """The block table a student is built with (see :mod:`recycle_distill.students.blocks.table`).

    ``"plain"``: the plain blocks. ``"fast"``: the fast CPU inference blocks (the table
    ``FAST_BLOCKS``): the model computes exactly what ``optimize_for_inference`` makes of the
    plain one, with nothing converted afterwards but the precision. ``"map_free"``: a full layer
    hands its queries and keys, not its (B, H, T, T) map, to the layer that reuses it, which
    recomputes the map block by block, forward and backward (the table ``MAP_FREE_BLOCKS``,
    :mod:`recycle_distill.students.blocks.map_free`); the fast blocks do this by themselves past
    ``MAP_FREE_FROM_BYTES`` of map.
    """
    if blocks == "plain":
        return PLAIN
    if blocks == "fast":
        return FAST_BLOCKS
    if blocks == "map_free":
        return MAP_FREE_BLOCKS
    raise ValueError(f"blocks: expected one of {', '.join(BLOCKS)}, got {short_repr(blocks)}")
