"""Shape checks and frame bookkeeping shared by every distillation objective.

All tensors are batch-first: layer outputs are (B, T, D), frame masks are (B, T) bool.
Teacher outputs can be longer than the student's (a student that crops its frame count to a
multiple, e.g. 48 frames against the teacher's 49): they are cut to the student's T keeping
the FIRST frames, as the original trainer's ``narrow(2, 0, T)`` does.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "cut_frames",
    "cut_mask",
    "check_layer_lists",
    "check_hint_layers",
    "valid_frames",
    "loss_dtype",
]


def loss_dtype(*tensors: Tensor) -> torch.dtype:
    """float32 for half/bfloat16 inputs, else the widest input dtype.

    Sums over B*T*D squared errors lose most of their digits (or overflow) in fp16, so the
    losses are always reduced in at least float32; float64 inputs stay float64 (tests).
    """
    dtype = torch.float32
    for tensor in tensors:
        if tensor.dtype == torch.float64:
            dtype = torch.float64
    return dtype


def cut_frames(tensor: Tensor, num_frames: int, name: str) -> Tensor:
    """(B, T', ...) -> (B, num_frames, ...), keeping the first frames; T' < num_frames fails."""
    if tensor.dim() < 2:
        raise ValueError(f"{name}: expected at least (B, T), got shape {tuple(tensor.shape)}")
    if tensor.shape[1] < num_frames:
        raise ValueError(f"{name} has {tensor.shape[1]} frames, fewer than the student's {num_frames}")
    return tensor[:, :num_frames]


def cut_mask(mask: Optional[Tensor], batch: int, num_frames: int, name: str) -> Optional[Tensor]:
    """Check a (B, T') bool frame mask and cut it to (B, num_frames); None passes through."""
    if mask is None:
        return None
    if mask.dim() != 2 or mask.shape[0] != batch:
        raise ValueError(f"{name}: expected a (B, T) mask with B={batch}, got shape {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}: expected a bool mask, got {mask.dtype}")
    return cut_frames(mask, num_frames, name)


def check_layer_lists(student: Sequence[Tensor], **teachers: Sequence[Tensor]) -> tuple[int, int, int]:
    """Every list has one (B, T, D) entry per student layer; returns the student's (N, B, T).

    Teacher entries must share B and D with the student entry they pair with and have at
    least T frames (they are cut later).
    """
    if len(student) == 0:
        raise ValueError("student_layers is empty")
    batch, num_frames = student[0].shape[:2]
    for index, tensor in enumerate(student):
        if tensor.dim() != 3 or tensor.shape[:2] != (batch, num_frames):
            raise ValueError(
                f"student_layers[{index}] has shape {tuple(tensor.shape)}, "
                f"expected (B, T, D) = ({batch}, {num_frames}, D)"
            )
    for name, layers in teachers.items():
        if len(layers) != len(student):
            raise ValueError(f"{name} has {len(layers)} entries, student_layers has {len(student)}: map them first")
        for index, (pred, target) in enumerate(zip(student, layers)):
            if target.dim() != 3 or target.shape[0] != batch or target.shape[2] != pred.shape[2]:
                raise ValueError(
                    f"{name}[{index}] has shape {tuple(target.shape)}; the student's is {tuple(pred.shape)}"
                    " (is it time-major? transpose to (B, T, D))"
                )
            if target.shape[1] < num_frames:
                raise ValueError(f"{name}[{index}] has {target.shape[1]} frames, fewer than the student's {num_frames}")
    return len(student), batch, num_frames


def check_hint_layers(hint_layers: Sequence[int], num_layers: int) -> list[int]:
    """0-based hint indices, each in [0, N-1), no repeats: the last layer is the reconstruction one."""
    hints = [int(index) for index in hint_layers]
    for index in hints:
        if index == num_layers - 1:
            raise ValueError(f"hint_layers holds {index}, the last layer: it is always the reconstruction layer")
        if not 0 <= index < num_layers - 1:
            raise ValueError(f"hint_layers holds {index}; expected 0-based indices in [0, {num_layers - 1})")
    if len(set(hints)) != len(hints):
        raise ValueError(f"hint_layers has repeats: {hints}")
    return hints


def valid_frames(padding_mask: Optional[Tensor], batch: int, num_frames: int, device: torch.device) -> Tensor:
    """(B, T) bool, True = a frame that counts (all True without a padding mask)."""
    if padding_mask is None:
        return torch.ones(batch, num_frames, dtype=torch.bool, device=device)
    return ~padding_mask.to(device)
