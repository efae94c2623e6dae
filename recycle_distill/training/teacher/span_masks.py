"""The teacher's span masking (wav2vec 2.0 / HuBERT ``compute_mask_indices``), reproducible.

S3PRL ships this algorithm (``s3prl.upstream.wav2vec2.wav2vec2_model.compute_mask_indices``),
but we cannot call it: it draws from NumPy's *global* RNG (so two callers interleave and a
run cannot be replayed), and its no-overlap branch uses ``np.int``, which NumPy >= 1.24
removed -- the distillation recipes use exactly that branch (``no_mask_overlap: True``).

This module implements the same algorithm with an explicit ``np.random.RandomState``. It
makes the same RNG calls in the same order, so with ``RandomState(s)`` it returns exactly what
the original returns after ``np.random.seed(s)`` (``tests/training/test_teacher.py`` checks this against
S3PRL's copy). Spans never cover padding; with ``require_same_masks`` every row ends up with
the same number of masked frames (longer rows drop random masked frames).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["SpanMaskConfig", "compute_mask_indices", "as_random_state", "RandomLike"]

RandomLike = Union[None, int, np.random.RandomState, torch.Generator]

SELECTIONS = ("static", "uniform", "normal", "poisson")


@dataclass(frozen=True)
class SpanMaskConfig:
    """Span-masking hyper-parameters (fairseq ``cfg.model`` names in comments).

    Defaults are the distillation recipes' teacher section (ARMHuBERT/MaskHuBERT 960 h):
    ``mask_prob 0.8, mask_length 10, mask_selection uniform, mask_other 0,
    no_mask_overlap True, mask_min_space 1`` and fairseq's hard-coded ``min_masks=2``.
    """

    mask_prob: float = 0.8  # mask_prob
    mask_length: int = 10  # mask_length
    selection: str = "uniform"  # mask_selection
    other: float = 0.0  # mask_other
    no_overlap: bool = True  # no_mask_overlap
    min_space: int = 1  # mask_min_space
    min_masks: int = 2
    require_same_masks: bool = True

    # fairseq cfg key -> field name, for building from a checkpoint cfg or a YAML teacher section.
    CFG_KEYS: ClassVar[dict[str, str]] = {
        "mask_prob": "mask_prob",
        "mask_length": "mask_length",
        "mask_selection": "selection",
        "mask_other": "other",
        "no_mask_overlap": "no_overlap",
        "mask_min_space": "min_space",
    }

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.mask_prob) <= 1.0:
            raise ValueError(f"mask_prob must be in [0, 1], got {self.mask_prob}")
        if int(self.mask_length) < 1:
            raise ValueError(f"mask_length must be >= 1, got {self.mask_length}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"mask_selection must be one of {SELECTIONS}, got {self.selection!r}")
        if int(self.min_space) < 0 or int(self.min_masks) < 0:
            raise ValueError("mask_min_space and min_masks must be >= 0")

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any], base: Optional["SpanMaskConfig"] = None) -> "SpanMaskConfig":
        """``base`` (default: the recipe defaults) updated with the fairseq-named keys of ``cfg``.

        Keys of ``cfg`` that are not masking keys are ignored, so a whole ``cfg.model`` or a
        YAML ``teacher:`` section can be passed as is.
        """
        base = base or cls()
        updates = {field: cfg[key] for key, field in cls.CFG_KEYS.items() if key in cfg}
        return dataclasses.replace(base, **updates)

    @classmethod
    def from_model(cls, model: Any) -> "SpanMaskConfig":
        """The masking cfg an S3PRL HuBERT / WavLM / wav2vec 2.0 model was built with."""
        return cls(
            mask_prob=float(model.mask_prob), mask_length=int(model.mask_length),
            selection=str(model.mask_selection), other=float(model.mask_other),
            no_overlap=bool(model.no_mask_overlap), min_space=int(model.mask_min_space),
        )


def as_random_state(generator: RandomLike) -> np.random.RandomState:
    """A NumPy ``RandomState`` from a seed, a ``RandomState``, a torch ``Generator`` or None.

    ``None`` draws the seed from torch's global RNG, so ``torch.manual_seed`` makes the masks
    of a training run reproducible without touching NumPy's global state.
    """
    if isinstance(generator, np.random.RandomState):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.RandomState(int(generator) % (2**32))
    if generator is None or isinstance(generator, torch.Generator):
        seed = torch.randint(0, 2**31 - 1, (1,), generator=generator).item()
        return np.random.RandomState(int(seed))
    raise TypeError(f"expected None, an int seed, a numpy RandomState or a torch Generator, got {type(generator)}")


def compute_mask_indices(
    padding_mask_or_shape: Union[Tensor, tuple[int, int]],
    config: SpanMaskConfig = SpanMaskConfig(),
    generator: RandomLike = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Tensor:
    """Sample span masks on the teacher's frame grid.

    Args:
        padding_mask_or_shape: (B, T) frame padding mask (True = padding; padded frames are
            never masked and shorten the row's mask budget), or a (B, T) shape tuple when
            nothing is padded.
        config: the span parameters.
        generator: seed / ``RandomState`` / torch ``Generator`` / None (see
            :func:`as_random_state`).
        device: device of the result (default: the padding mask's device, else CPU).

    Returns:
        (B, T) bool mask, True = masked frame.
    """
    if isinstance(padding_mask_or_shape, Tensor):
        padding = padding_mask_or_shape
        if padding.dim() != 2:
            raise ValueError(f"padding mask must be (B, T), got shape {tuple(padding.shape)}")
        batch, frames = padding.shape
        valid = (~padding.bool()).sum(dim=1).tolist()
        device = padding.device if device is None else device
    else:
        batch, frames = (int(v) for v in padding_mask_or_shape)
        valid = None
    rng = as_random_state(generator)
    rows = _sample_rows(batch, frames, valid, config, rng)
    mask = np.zeros((batch, frames), dtype=bool)
    for row, indices in enumerate(rows):
        mask[row, indices] = True
    return torch.from_numpy(mask).to(device or "cpu")


def _span_lengths(count: int, size: int, config: SpanMaskConfig, rng: np.random.RandomState) -> np.ndarray:
    """``count`` span lengths drawn per ``config.selection`` (fairseq's distributions)."""
    length = int(config.mask_length)
    if config.selection == "static":
        lengths = np.full(count, length)
    elif config.selection == "uniform":
        lengths = rng.randint(int(config.other), length * 2 + 1, size=count)
    elif config.selection == "normal":
        drawn = rng.normal(length, config.other, size=count)
        lengths = np.array([max(1, int(round(x))) for x in drawn], dtype=np.int64)
    else:  # poisson
        drawn = rng.poisson(length, size=count)
        lengths = np.array([int(round(x)) for x in drawn], dtype=np.int64)
    if count > 0 and lengths.sum() == 0:
        # Every span came out empty: keep one so the row is masked at all (as fairseq does).
        lengths[0] = min(length, size - 1)
    return lengths


def _place_without_overlap(size: int, lengths: np.ndarray, min_space: int, rng: np.random.RandomState) -> np.ndarray:
    """Place spans longest first into free intervals, keeping ``min_space`` frames between."""
    chosen: list[int] = []
    intervals = [(0, size)]
    shortest = int(min(lengths))
    for length in sorted((int(v) for v in lengths), reverse=True):
        # An interval can take the span only if it also leaves room for the gap.
        room = np.array([end - start if end - start >= length + min_space else 0 for start, end in intervals],
                        dtype=np.int64)
        if room.sum() == 0:
            break
        start, end = intervals.pop(rng.choice(len(intervals), p=room / room.sum()))
        # (end - length > start always holds here when min_space >= 1.)
        span_start = rng.randint(start, end - length) if end - length > start else start
        chosen.extend(range(span_start, span_start + length))
        # Split the interval; keep a side only if a further span (>= shortest) still fits.
        if span_start - start - min_space >= shortest:
            intervals.append((start, span_start - min_space + 1))
        if end - span_start - length - min_space > shortest:
            intervals.append((span_start + length + min_space, end))
    return np.asarray(chosen, dtype=np.int64)


def _sample_rows(
    batch: int, frames: int, valid: Optional[list[int]], config: SpanMaskConfig, rng: np.random.RandomState
) -> list[np.ndarray]:
    """Per-row masked frame indices (the RNG call order matches fairseq's exactly)."""
    prob, length = float(config.mask_prob), int(config.mask_length)
    # Drawn even when per-row counts replace it: the original consumes this number first.
    all_count = max(int(config.min_masks), int(prob * frames / float(length) + rng.rand()))
    rows = []
    for row in range(batch):
        if valid is not None:
            size = int(valid[row])
            count = max(int(config.min_masks), int(prob * size / float(length) + rng.rand()))
        else:
            size, count = frames, all_count
        lengths = _span_lengths(count, size, config, rng)
        if count == 0:
            rows.append(np.zeros(0, dtype=np.int64))
            continue
        if config.no_overlap:
            indices = _place_without_overlap(size, lengths, int(config.min_space), rng)
        else:
            # Overlapping spans: distinct random starts, each start followed by its span.
            shortest = int(min(lengths))
            if size - shortest <= count:
                shortest = size - count - 1
            starts = rng.choice(size - shortest, count, replace=False)
            indices = np.asarray([starts[j] + offset for j in range(len(starts)) for offset in range(lengths[j])],
                                 dtype=np.int64)
        rows.append(np.unique(indices[indices < size]))
    if config.require_same_masks and rows:
        # Equal counts per row let the masked frames of a batch be gathered into one tensor.
        fewest = min(len(indices) for indices in rows)
        rows = [rng.choice(indices, fewest, replace=False) if len(indices) > fewest else indices for indices in rows]
    return rows
