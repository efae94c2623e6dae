"""Bring a teacher's frames onto the student's 20 ms grid.

Most teachers run at the student's rate (320 samples a frame at 16 kHz). TERA and Mockingjay
hop 10 ms (160 samples): two of their frames are averaged into one student frame. A teacher
coarser by a whole factor repeats each frame; any other ratio interpolates linearly. Frames
are aligned at their starts (no sub-frame shift), and the result is cut or edge-padded to
the student's frame count. Ratios beyond :data:`MAX_RATIO` either way are refused: one
student frame would stand for too many (or too small a piece of a) teacher frame for a
frame-by-frame target to mean anything.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["MAX_RATIO", "FrameRateError", "check_rates", "resample_frames"]

MAX_RATIO = 8


class FrameRateError(ValueError):
    """A teacher frame rate that cannot be mapped onto the student's frames."""


def check_rates(teacher_rate: object, student_rate: int, source: str) -> None:
    """Refuse an unknown or far-off teacher rate (samples per frame) with a message naming both."""
    if isinstance(teacher_rate, bool) or not isinstance(teacher_rate, int) or teacher_rate < 1:
        raise FrameRateError(f"{source}: the upstream reports no usable frame rate "
                             f"(get_downsample_rates('hidden_states') = {teacher_rate!r}); it cannot be a teacher")
    ratio = max(teacher_rate, student_rate) / min(teacher_rate, student_rate)
    if ratio > MAX_RATIO:
        raise FrameRateError(
            f"{source}: the upstream's frames are {teacher_rate} samples ({teacher_rate / 16:g} ms) and the student's "
            f"{student_rate} ({student_rate / 16:g} ms): a {ratio:g}x rate difference is more than {MAX_RATIO}x, so "
            f"frame-by-frame targets are meaningless"
        )


def resample_frames(states: Tensor, teacher_rate: int, student_rate: int, num_frames: int) -> Tensor:
    """(B, T_t, D) teacher frames -> (B, num_frames, D) on the student's grid (see module doc)."""
    if teacher_rate == student_rate:
        out = states
    elif student_rate % teacher_rate == 0:  # finer teacher: average each group of frames
        factor = student_rate // teacher_rate
        usable = states.shape[1] // factor * factor
        if usable == 0:
            out = states.mean(dim=1, keepdim=True)
        else:
            out = states[:, :usable].reshape(states.shape[0], usable // factor, factor, states.shape[2]).mean(dim=2)
    elif teacher_rate % student_rate == 0:  # coarser teacher: repeat each frame
        out = states.repeat_interleave(teacher_rate // student_rate, dim=1)
    else:
        length = max(1, round(states.shape[1] * teacher_rate / student_rate))
        out = F.interpolate(states.transpose(1, 2), size=length, mode="linear", align_corners=False).transpose(1, 2)
    if out.shape[1] >= num_frames:
        return out[:, :num_frames]
    return F.pad(out.transpose(1, 2), (0, num_frames - out.shape[1]), mode="replicate").transpose(1, 2)
