"""Chunked processing of unbounded recordings: windows with context on both sides, centres kept.

A recording of T frames is cut into spans of ``chunk`` frames. Each span is computed in a
window that adds up to ``context`` frames on either side (less at the recording's ends); the
window's states for the span are kept and the context frames' states dropped, so every frame
is computed once with at least ``context`` frames (or the recording's edge) around it. A
window starts on a frame boundary (a multiple of the CNN's total stride), so its frames are
frames of the whole recording. Memory is that of one window, whatever the recording's length.

Not equal to the full-context output: the CNN's GroupNorm normalises over the window, the
positional convolution and attention see only the window. The deviation by layer, for the
offered chunk and overlap sizes, is measured by ``benchmarks/chunked_deviation.py`` and stated
in docs/inference.md ("Long recordings").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from recycle_distill.util.messages import short_repr
from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = ["ChunkSettings", "chunk_settings", "chunk_windows", "run_chunked", "run_chunked_batch"]


@dataclass(frozen=True)
class ChunkSettings:
    """Checked chunking options (see :func:`chunk_settings`).

    Attributes:
        chunk_seconds: the span each window keeps (> 0).
        overlap_seconds: the context added on each side of it and dropped (>= 0).
    """

    chunk_seconds: float
    overlap_seconds: float

    def frames(self, stride: int) -> tuple[int, int]:
        """(span, context) in frames of ``stride`` samples: the span at least one frame."""
        per_second = SAMPLE_RATE / stride
        return max(1, round(self.chunk_seconds * per_second)), round(self.overlap_seconds * per_second)


def chunk_settings(chunk_seconds: object, overlap_seconds: object) -> Optional[ChunkSettings]:
    """The checked options, or None for no chunking (``chunk_seconds`` None); else ValueError
    naming the option.

    ``chunk_seconds``: the span each window keeps (> 0). ``overlap_seconds``: the context
    added on each side of it and dropped (>= 0; None is 0).
    """
    if chunk_seconds is None:
        if overlap_seconds not in (None, 0, 0.0):
            raise ValueError(f"overlap_seconds={short_repr(overlap_seconds)} needs chunk_seconds "
                             "(the span each window keeps)")
        return None
    chunk = _seconds(chunk_seconds, "chunk_seconds", allow_zero=False)
    overlap = 0.0 if overlap_seconds is None else _seconds(overlap_seconds, "overlap_seconds", allow_zero=True)
    return ChunkSettings(chunk, overlap)


def _seconds(value: object, name: str, allow_zero: bool) -> float:
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a number of seconds {bound}, got {short_repr(value)}")
    return float(value)


def chunk_windows(num_frames: int, span: int, context: int) -> list[tuple[int, int, int, int]]:
    """(window start, window end, kept start, kept end) frame indices covering ``num_frames``.

    The kept ranges tile [0, num_frames) in order; each window is its kept range widened by
    ``context`` frames on both sides, clipped to the recording.
    """
    windows = []
    for start in range(0, num_frames, span):
        end = min(num_frames, start + span)
        windows.append((max(0, start - context), min(num_frames, end + context), start, end))
    return windows


def run_chunked(
    forward: Callable[[Tensor], list[Tensor]],
    wave: Tensor,
    num_frames: int,
    stride: int,
    receptive_field: int,
    settings: ChunkSettings,
) -> list[Tensor]:
    """One recording's states, computed window by window.

    Args:
        forward: runs one (S_w,) window and returns its N states, each (T_w, D).
        wave: (S,) the recording.
        num_frames: T, the frames the model makes of all of ``wave``.
        stride: samples per frame (the CNN's total stride).
        receptive_field: samples of one frame.
        settings: :func:`chunk_settings`.

    Returns:
        N states, each (T, D).
    """
    span, context = settings.frames(stride)
    pieces: list[list[Tensor]] = []
    for first, last, keep_start, keep_end in chunk_windows(num_frames, span, context):
        # Frames first .. last-1 read samples [first * stride, (last - 1) * stride + receptive_field);
        # the last window runs to the end, as the whole recording does (its CNN normalises over it).
        stop = wave.numel() if last == num_frames else (last - 1) * stride + receptive_field
        window = wave[first * stride : stop]
        states = forward(window)
        if states[0].shape[0] != last - first:
            raise RuntimeError(f"chunked run: a window of {window.numel()} samples gave {states[0].shape[0]} "
                               f"frames, expected {last - first}")
        pieces.append([state[keep_start - first : keep_end - first] for state in states])
    return [torch.cat(layer) for layer in zip(*pieces)]


def run_chunked_batch(
    forward: Callable[[Tensor], list[Tensor]],
    wavs: list[Tensor],
    num_frames: list[int],
    stride: int,
    receptive_field: int,
    settings: ChunkSettings,
) -> list[Tensor]:
    """:func:`run_chunked` for each of B recordings, padded into N states (B, T, D).

    ``num_frames[b]`` is recording b's frame count; frames after a recording's end are zeros.
    Any S3PRL-style upstream chunks this way: ``forward`` runs it on ``[window]`` and takes item 0
    of each state.
    """
    per_wave = [run_chunked(forward, wave, frames, stride, receptive_field, settings)
                for wave, frames in zip(wavs, num_frames, strict=True)]
    longest = max(frames for frames in num_frames)
    padded = []
    for layer in zip(*per_wave):  # B x (T_b, D) -> (B, T, D)
        out = layer[0].new_zeros(len(layer), longest, layer[0].shape[-1])
        for index, state in enumerate(layer):
            out[index, : state.shape[0]] = state
        padded.append(out)
    return padded
