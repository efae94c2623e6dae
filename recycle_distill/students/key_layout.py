"""The released checkpoints' key layout, as data.

Our blocks name their parts (``conv``, ``norm``); the released Recycle-and-Distill checkpoints
(fairseq's naming) number them inside ``nn.Sequential`` containers (``0`` conv, ``2`` norm, a
dropout at ``1``). This table maps one naming onto the other, like torchaudio's fairseq import
maps keys, so the modules carry no placeholder submodules: :class:`~.student.StudentModel`
applies it in both directions, and ``state_dict()`` keys stay exactly the released ones
(``docs/students.md``, "Key layout").

Each row is ``(our key, released key)``, both templates over the key without the model's own
prefix: ``{i}`` stands for a block number and ``{param}`` for a tensor name. A key matches at
most one row; keys that match none are the same in both layouts.
"""

from __future__ import annotations

import re
from typing import Callable, MutableMapping

__all__ = ["KEY_TABLE", "to_released_key", "to_module_key", "rename_keys"]

KEY_TABLE: tuple[tuple[str, str], ...] = (
    ("feature_extractor.conv_layers.{i}.conv.{param}", "feature_extractor.conv_layers.{i}.0.{param}"),
    ("feature_extractor.conv_layers.{i}.norm.{param}", "feature_extractor.conv_layers.{i}.2.{param}"),
    ("encoder.pos_conv.conv.{param}", "encoder.pos_conv.0.{param}"),
)
_FIELDS = {"i": r"(?P<i>\d+)", "param": r"(?P<param>\w+)"}


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(_FIELDS[part[1:-1]] if part.startswith("{") else re.escape(part) for part in parts) + r"\Z")


_TO_RELEASED = [(_pattern(ours), released) for ours, released in KEY_TABLE]
_TO_MODULE = [(_pattern(released), ours) for ours, released in KEY_TABLE]


def _apply(rules, key: str) -> str:
    for pattern, template in rules:
        found = pattern.match(key)
        if found:
            return template.format(**found.groupdict())
    return key


def to_released_key(key: str) -> str:
    """Our key -> the released key (unchanged when no row applies)."""
    return _apply(_TO_RELEASED, key)


def to_module_key(key: str) -> str:
    """A released key -> ours (unchanged when no row applies)."""
    return _apply(_TO_MODULE, key)


def rename_keys(state_dict: MutableMapping, prefix: str, rename: Callable[[str], str]) -> None:
    """Rename, in place and keeping the order, every key under ``prefix`` with ``rename``."""
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        if key.startswith(prefix):
            key = prefix + rename(key[len(prefix):])
        state_dict[key] = value
