"""Turn the ``data:`` section into train/validation manifests, with early, clear errors."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

from recycle_distill.training.data import AudioEntry, build_manifest, manifest_from_data_config
from recycle_distill.training.config import TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["build_manifests"]


def build_manifests(config: TrainConfig, min_samples: int,
                    write_cache: bool = True) -> tuple[list[AudioEntry], Optional[list[AudioEntry]]]:
    """(train entries, validation entries or None); utterances shorter than ``min_samples`` dropped.

    ``write_cache=False`` (``--check``) reads a cached folder scan but writes none.
    """
    data = config.data
    cache_dir = data.cache_dir or os.path.join(config.output_dir, "manifests")
    options = dict(cache_dir=cache_dir, write_cache=write_cache)
    section = dataclasses.asdict(data)
    train = manifest_from_data_config(section, "train", **options)
    valid = None
    if data.valid_manifest or data.valid_audio_dir:
        valid = build_manifest(data.valid_manifest or data.valid_audio_dir, root=data.libri_root, **options)
    elif data.libri_root and data.test_set and not (data.manifest or data.audio_dir):
        valid = manifest_from_data_config(section, "test", **options)
    return _drop_short(train, min_samples, "train"), (_drop_short(valid, min_samples, "valid") if valid else None)


def _drop_short(entries: list[AudioEntry], min_samples: int, name: str) -> list[AudioEntry]:
    kept = [entry for entry in entries if entry.num_samples >= min_samples]
    if len(kept) < len(entries):
        logger.warning("%s: dropped %d utterances shorter than %d samples", name, len(entries) - len(kept), min_samples)
    return kept
