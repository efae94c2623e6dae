"""Batch waveforms: right zero-padding to (B, S), lengths, padding mask.

The collate drops ``None`` items (files the dataset skipped). When every item of a batch
was skipped it returns an *empty batch*: ``batch.is_empty`` is True, ``waveforms`` is
(0, 0) and ``lengths``/``indices`` are (0,). The trainer skips such a batch
(``if batch.is_empty: continue``). Under DDP all ranks must still take the same number of
optimizer steps, so a distributed trainer should run a zero-loss step (or agree across
ranks) instead of skipping on one rank alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from recycle_distill.students.blocks.masks import lengths_to_padding_mask

__all__ = ["AudioBatch", "collate_audio", "padding_mask"]


def padding_mask(lengths: Tensor, max_length: Optional[int] = None) -> Tensor:
    """Boolean (B, S) mask, True at padding (``s >= lengths[b]``), the package's convention.

    Args:
        lengths: (B,) sample counts.
        max_length: S; defaults to ``lengths.max()`` (0 for an empty batch).
    """
    if max_length is None:
        max_length = int(lengths.max()) if lengths.numel() else 0
    return lengths_to_padding_mask(lengths, max_length)


@dataclass
class AudioBatch:
    """A padded batch of waveforms.

    Attributes:
        waveforms: (B, S) float32, right zero-padded.
        lengths: (B,) int64 valid samples per row.
        indices: (B,) int64 dataset indices of the rows.
        num_dropped: items of the sampled batch that were skipped (bad files).
    """

    waveforms: Tensor
    lengths: Tensor
    indices: Tensor
    num_dropped: int = 0

    @property
    def is_empty(self) -> bool:
        """True when every item was skipped: the trainer should skip this batch."""
        return self.waveforms.shape[0] == 0

    def __len__(self) -> int:
        return int(self.waveforms.shape[0])

    def padding_mask(self) -> Tensor:
        """(B, S) bool, True at padding."""
        return padding_mask(self.lengths, self.waveforms.shape[1])

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "AudioBatch":
        return AudioBatch(
            self.waveforms.to(device, non_blocking=non_blocking),
            self.lengths.to(device, non_blocking=non_blocking),
            self.indices.to(device, non_blocking=non_blocking),
            self.num_dropped,
        )

    def pin_memory(self) -> "AudioBatch":
        """Called by ``DataLoader(pin_memory=True)`` on custom batch types."""
        return AudioBatch(self.waveforms.pin_memory(), self.lengths.pin_memory(), self.indices.pin_memory(), self.num_dropped)

    @classmethod
    def empty(cls, num_dropped: int = 0) -> "AudioBatch":
        """The empty-batch marker."""
        return cls(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), num_dropped)


def collate_audio(items: Sequence[Optional[tuple[Tensor, int]]]) -> AudioBatch:
    """Collate ``(waveform (T,), index)`` items, dropping ``None``, into an :class:`AudioBatch`."""
    kept = [item for item in items if item is not None]
    dropped = len(items) - len(kept)
    if not kept:
        return AudioBatch.empty(dropped)
    lengths = torch.tensor([int(wave.shape[0]) for wave, _ in kept], dtype=torch.long)
    waveforms = torch.zeros(len(kept), int(lengths.max()), dtype=torch.float32)
    for row, (wave, _) in enumerate(kept):
        waveforms[row, : wave.shape[0]] = wave
    indices = torch.tensor([int(index) for _, index in kept], dtype=torch.long)
    return AudioBatch(waveforms, lengths, indices, dropped)
