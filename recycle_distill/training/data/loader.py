"""A DataLoader whose state counts the batches the trainer actually received.

A DataLoader with workers pulls ``prefetch_factor x num_workers`` batches from its batch
sampler ahead of the training loop, so the sampler's own count runs ahead of the loop.
:class:`ResumableDataLoader` counts batches as it hands them out and reports that count in
:meth:`state_dict`; save that, not the sampler's state.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Optional

from torch.utils.data import DataLoader

from recycle_distill.training.data.collate import AudioBatch, collate_audio
from recycle_distill.training.data.dataset import AudioDataset
from recycle_distill.training.data.sampler import LengthBucketBatchSampler

logger = logging.getLogger(__name__)

__all__ = ["ResumableDataLoader", "make_dataloader"]


class ResumableDataLoader(DataLoader):
    """DataLoader over a :class:`LengthBucketBatchSampler`, resumable mid-epoch.

    Usage::

        loader.load_state_dict(saved)            # optional, on restart
        for epoch in range(start_epoch, epochs):
            loader.set_epoch(epoch)              # sampler order + dataset crops
            for batch in loader:                 # AudioBatch
                if batch.is_empty:
                    continue
                ...
                checkpoint["data"] = loader.state_dict()

    Args:
        dataset: the dataset (usually :class:`AudioDataset`).
        batch_sampler: the length-bucketing sampler.
        collate_fn: defaults to :func:`collate_audio`.
        **kwargs: other DataLoader arguments (``num_workers``, ``pin_memory``, ...).
    """

    def __init__(
        self,
        dataset: Any,
        batch_sampler: LengthBucketBatchSampler,
        collate_fn: Optional[Callable] = collate_audio,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("persistent_workers") and getattr(dataset, "random_crop", False):
            # Workers keep the dataset copy they started with, so set_epoch would not reach them.
            logger.warning("persistent_workers=True: random crops will repeat every epoch")
        super().__init__(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, **kwargs)
        self._delivered: Optional[tuple[int, int]] = None  # (epoch, batches handed out)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch on the sampler and (when it has one) the dataset."""
        self.batch_sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[AudioBatch]:  # type: ignore[override]
        sampler = self.batch_sampler
        epoch = sampler.epoch
        position = min(sampler.resume_position, len(sampler))
        self._delivered = (epoch, position)
        for batch in super().__iter__():
            position += 1
            self._delivered = (epoch, position)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state with the number of batches this loader delivered."""
        sampler = self.batch_sampler
        if self._delivered is not None and self._delivered[0] == sampler.epoch:
            return sampler.state_dict(consumed=self._delivered[1])
        return sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)
        self._delivered = None


def make_dataloader(
    dataset: AudioDataset,
    batch_size: int,
    *,
    max_batch_samples: Optional[int] = None,
    shuffle: bool = True,
    seed: int = 0,
    pool_batches: int = 100,
    num_replicas: int = 1,
    rank: int = 0,
    drop_uneven: bool = False,
    **loader_kwargs: Any,
) -> ResumableDataLoader:
    """A :class:`ResumableDataLoader` with a length-bucketing sampler over ``dataset.lengths``.

    ``loader_kwargs`` go to DataLoader (``num_workers``, ``pin_memory``, ...). Returns batches
    of type :class:`AudioBatch`.
    """
    sampler = LengthBucketBatchSampler(
        dataset.lengths, batch_size, max_batch_samples=max_batch_samples, shuffle=shuffle, seed=seed,
        pool_batches=pool_batches, num_replicas=num_replicas, rank=rank, drop_uneven=drop_uneven,
    )
    return ResumableDataLoader(dataset, sampler, **loader_kwargs)
