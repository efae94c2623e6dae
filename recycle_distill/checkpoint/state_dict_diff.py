"""How a state dict differs from the one a model expects: the strict-load report, said once.

Both the student loader and the teacher builder refuse weights that do not fit, before
``load_state_dict``, with a message listing missing keys, unexpected keys and shape mismatches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from recycle_distill.util.messages import plain

__all__ = ["StateDictDiff", "diff_state_dicts", "describe_keys"]


def describe_keys(keys: list[str], limit: int = 8) -> str:
    """The first ``limit`` keys (each on one line, bounded), then how many there are in all."""
    shown = ", ".join(plain(key, 200) for key in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


@dataclass
class StateDictDiff:
    """Keys in model order: missing from the weights, not in the model, and of another shape."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint (a, b) vs model (c, d)"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def parts(self, limit: int = 8) -> list[str]:
        """``missing keys: ...``, ``unexpected keys: ...``, ``shape mismatches: ...`` (those present)."""
        return [f"{title}: {describe_keys(items, limit)}"
                for title, items in (("missing keys", self.missing), ("unexpected keys", self.unexpected),
                                     ("shape mismatches", self.mismatched)) if items]


def diff_state_dicts(expected: Mapping[str, Any], given: Mapping[str, Any]) -> StateDictDiff:
    """Compare ``given`` (the file's tensors) with ``expected`` (``model.state_dict()``, any device)."""
    return StateDictDiff(
        missing=[key for key in expected if key not in given],
        unexpected=[key for key in given if key not in expected],
        mismatched=[f"{plain(key, 200)}: checkpoint {tuple(given[key].shape)} vs model {tuple(value.shape)}"
                    for key, value in expected.items()
                    if key in given and tuple(given[key].shape) != tuple(value.shape)],
    )
