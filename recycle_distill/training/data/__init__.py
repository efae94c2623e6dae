"""The trainer's data pipeline: manifests, waveform dataset, length-bucketing sampler, collate.

Typical use::

    manifest = manifest_from_data_config(config["data"], "train", cache_dir=out / "cache")
    dataset = AudioDataset(manifest, max_samples=250_000, seed=seed)
    loader = make_dataloader(dataset, batch_size=8, seed=seed, num_replicas=world, rank=rank,
                             num_workers=4)
    for epoch in ...:
        loader.set_epoch(epoch)
        for batch in loader:          # AudioBatch: waveforms (B, S), lengths (B,), indices (B,)
            if batch.is_empty:        # every file of the batch was skipped
                continue
"""

from recycle_distill.training.data.collate import AudioBatch, collate_audio, padding_mask
from recycle_distill.training.data.dataset import SKIP_REASONS, AudioDataset
from recycle_distill.training.data.loader import ResumableDataLoader, make_dataloader
from recycle_distill.training.data.manifest import (
    AudioEntry,
    Manifest,
    ManifestError,
    ManifestNotFoundError,
    read_len_for_bucket,
    read_tsv_manifest,
    write_len_for_bucket,
    write_tsv_manifest,
)
from recycle_distill.training.data.sampler import LengthBucketBatchSampler
from recycle_distill.training.data.scan import (
    AUDIO_EXTENSIONS,
    default_cache_dir,
    scan_folder,
    scan_librispeech,
)
from recycle_distill.training.data.sources import build_manifest, load_manifest, manifest_from_data_config

__all__ = [
    "AudioBatch",
    "collate_audio",
    "padding_mask",
    "SKIP_REASONS",
    "AudioDataset",
    "ResumableDataLoader",
    "make_dataloader",
    "AudioEntry",
    "Manifest",
    "ManifestError",
    "ManifestNotFoundError",
    "read_len_for_bucket",
    "read_tsv_manifest",
    "write_len_for_bucket",
    "write_tsv_manifest",
    "LengthBucketBatchSampler",
    "AUDIO_EXTENSIONS",
    "default_cache_dir",
    "scan_folder",
    "scan_librispeech",
    "build_manifest",
    "load_manifest",
    "manifest_from_data_config",
]
