"""Length-bucketing batch sampler: seeded, distributed, resumable.

Each epoch (as fairseq/S3PRL do): shuffle all indices with a generator seeded by
(seed, epoch), cut them into pools of ``pool_batches * batch_size`` items, sort each pool by
length (longest first) and cut it into batches, so a batch holds similar lengths and pads
little while batch contents still change every epoch; then shuffle the batch order.

A batch closes at ``batch_size`` items or, with ``max_batch_samples``, when its padded size
(items x longest item) would exceed that budget; one item longer than the budget forms a
batch on its own.

Distributed: every rank builds the same global batch list, pads it by repeating batches
from its start to a multiple of ``num_replicas`` (or drops the tail with
``drop_uneven=True``) and takes every ``num_replicas``-th batch from ``rank`` on, so ranks
get disjoint, equal-size shares.

Resume: :meth:`state_dict` holds (epoch, batches consumed in it); after
:meth:`load_state_dict` the next iteration starts at the next unconsumed batch. When
iterating the sampler directly (or a DataLoader with ``num_workers=0``) "consumed" is
"yielded"; worker DataLoaders pull batches ahead of the trainer, so save the state of a
:class:`~.loader.ResumableDataLoader` instead, which counts batches actually delivered.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

__all__ = ["LengthBucketBatchSampler"]

_STATE_VERSION = 1


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices grouped by length.

    Args:
        lengths: per-item length in samples (``AudioDataset.lengths``).
        batch_size: most items per batch.
        max_batch_samples: optional budget on padded samples per batch (B x longest).
        shuffle: shuffle items and batch order per epoch (False: eval, fixed order).
        seed: base seed; the epoch's order is a function of (seed, epoch) only.
        pool_batches: pool size in batches; larger pools pad less but vary less per epoch.
        num_replicas: number of distributed ranks.
        rank: this rank, in ``[0, num_replicas)``.
        drop_uneven: drop the last global batches that do not divide among the ranks
            instead of repeating batches to fill the last round.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        max_batch_samples: Optional[int] = None,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 100,
        num_replicas: int = 1,
        rank: int = 0,
        drop_uneven: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_samples is not None and max_batch_samples < 1:
            raise ValueError(f"max_batch_samples must be >= 1, got {max_batch_samples}")
        if pool_batches < 1:
            raise ValueError(f"pool_batches must be >= 1, got {pool_batches}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        if len(lengths) == 0:
            raise ValueError("cannot batch an empty dataset")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.max_batch_samples = max_batch_samples
        self.shuffle = shuffle
        self.seed = int(seed)
        self.pool_batches = pool_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_uneven = drop_uneven
        self._epoch = 0
        self._consumed = 0  # batches of this epoch handed out (or restored)
        self._resume_at = 0  # where the next __iter__ starts (set by load_state_dict)
        self._cache: Optional[tuple[int, list[list[int]]]] = None

    # ---- epoch plan --------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def consumed(self) -> int:
        """Batches of the current epoch yielded so far (or restored from a state)."""
        return self._consumed

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order. Re-selecting the current epoch keeps a restored position."""
        epoch = int(epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._consumed = 0
            self._resume_at = 0

    def _bucket(self, pool: np.ndarray) -> list[list[int]]:
        # Stable sort on -length: ties keep pool order, so the plan is platform-independent.
        ordered = pool[np.argsort(-self.lengths[pool], kind="stable")]
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index in ordered.tolist():
            length = int(self.lengths[index])
            grown = max(longest, length)
            full = len(current) >= self.batch_size
            over = self.max_batch_samples is not None and grown * (len(current) + 1) > self.max_batch_samples
            if current and (full or over):
                batches.append(current)
                current, grown = [], length
            current.append(index)
            longest = grown
        if current:
            batches.append(current)
        return batches

    def global_batches(self, epoch: Optional[int] = None) -> list[list[int]]:
        """All ranks' batches of an epoch, before the distributed split (same on every rank)."""
        epoch = self._epoch if epoch is None else epoch
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        pool_size = self.pool_batches * self.batch_size
        batches: list[list[int]] = []
        for start in range(0, len(order), pool_size):
            batches.extend(self._bucket(order[start : start + pool_size]))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def rank_batches(self, epoch: Optional[int] = None) -> list[list[int]]:
        """This rank's batches of an epoch (the whole epoch, ignoring the resume position)."""
        epoch = self._epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        batches = self.global_batches(epoch)
        replicas = self.num_replicas
        if replicas > 1:
            if self.drop_uneven:
                batches = batches[: len(batches) - len(batches) % replicas]
                if not batches:
                    logger.warning("fewer batches than ranks: drop_uneven leaves every rank empty")
            else:
                total = math.ceil(len(batches) / replicas) * replicas
                # Repeat from the start (cyclically if needed) so every rank takes as many steps.
                batches = [batches[i % len(batches)] for i in range(total)]
            batches = batches[self.rank :: replicas]
        self._cache = (epoch, batches)
        return batches

    def __len__(self) -> int:
        """Batches this rank gets in the current epoch (the whole epoch)."""
        return len(self.rank_batches())

    @property
    def resume_position(self) -> int:
        """Index of the batch the next iteration starts at."""
        return self._resume_at

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches()
        start = min(self._resume_at, len(batches))
        # A restored position applies to one pass; the next pass of the same epoch is whole.
        self._resume_at = 0
        self._consumed = start
        for position in range(start, len(batches)):
            # Counted before the yield: once the consumer holds batch i, i + 1 are consumed.
            self._consumed = position + 1
            yield list(batches[position])

    # ---- resume ------------------------------------------------------------------------------

    def state_dict(self, consumed: Optional[int] = None) -> dict[str, Any]:
        """Epoch and batches consumed in it (``consumed`` overrides the sampler's own count)."""
        return {
            "version": _STATE_VERSION,
            "epoch": self._epoch,
            "consumed": self._consumed if consumed is None else int(consumed),
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "num_items": int(len(self.lengths)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at the batch after the last consumed one of ``state['epoch']``.

        A state from another number of ranks maps its global position (consumed x old
        ranks) onto this one, rounding down: a few batches may repeat, none is skipped.
        """
        consumed = int(state["consumed"])
        if int(state.get("seed", self.seed)) != self.seed:
            logger.warning("sampler state has seed %s, this sampler %s: using the state's", state["seed"], self.seed)
            self.seed = int(state["seed"])
            self._cache = None
        if int(state.get("num_items", len(self.lengths))) != len(self.lengths):
            logger.warning(
                "sampler state was for %s items, the dataset has %d: the resumed order differs",
                state["num_items"], len(self.lengths),
            )
        old_replicas = int(state.get("num_replicas", self.num_replicas))
        if old_replicas != self.num_replicas:
            mapped = consumed * old_replicas // self.num_replicas
            logger.warning(
                "sampler state from %d ranks, now %d: resuming at batch %d of this rank (was %d)",
                old_replicas, self.num_replicas, mapped, consumed,
            )
            consumed = mapped
        self._epoch = int(state["epoch"])
        self._consumed = consumed
        self._resume_at = consumed
