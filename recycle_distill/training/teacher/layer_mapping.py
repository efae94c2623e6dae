"""Which teacher layer each student layer is distilled from."""

from __future__ import annotations

import numbers
from typing import Optional, Sequence

__all__ = ["resolve_layer_mapping", "default_layer_mapping"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def default_layer_mapping(num_student_layers: int, teacher_num_layers: int) -> list[int]:
    """Student layer i <- teacher layer ``round((i + 1) * L / N) - 1`` (0-based), rounding halves up.

    Spreads N student layers evenly over L teacher layers and always pairs the last with the
    last (12 -> 12 is the identity, 4 -> 12 gives [2, 5, 8, 11]). Integer arithmetic, so no
    float or banker's rounding surprises.
    """
    n = _positive_int(num_student_layers, "num_student_layers")
    total = _positive_int(teacher_num_layers, "teacher_num_layers")
    return [max(0, (2 * (i + 1) * total + n) // (2 * n) - 1) for i in range(n)]


def resolve_layer_mapping(
    num_student_layers: int, teacher_num_layers: int, mapping: Optional[Sequence[int]] = None
) -> list[int]:
    """Validated 0-based teacher layer index for each student layer.

    Args:
        num_student_layers: N.
        teacher_num_layers: L.
        mapping: N teacher indices in [0, L) (repeats allowed), or None for
            :func:`default_layer_mapping`.

    Raises:
        ValueError: N or L not positive, mapping of the wrong length, a non-integer index, or
            an index outside [0, L) (the message names the student layer and the value).
    """
    n = _positive_int(num_student_layers, "num_student_layers")
    total = _positive_int(teacher_num_layers, "teacher_num_layers")
    if mapping is None:
        return default_layer_mapping(n, total)
    mapping = list(mapping)
    if len(mapping) != n:
        raise ValueError(
            f"layer mapping has {len(mapping)} entries but the student has {n} layers: {mapping}"
        )
    for student_layer, teacher_layer in enumerate(mapping):
        if isinstance(teacher_layer, bool) or not isinstance(teacher_layer, numbers.Integral):
            raise ValueError(
                f"layer mapping entry {student_layer} must be an integer teacher layer index, got {teacher_layer!r}"
            )
        teacher_layer = mapping[student_layer] = int(teacher_layer)
        if not 0 <= teacher_layer < total:
            raise ValueError(
                f"layer mapping: student layer {student_layer} -> teacher layer {teacher_layer} is impossible; "
                f"the teacher has {total} layers (valid indices 0..{total - 1})"
            )
    return mapping
