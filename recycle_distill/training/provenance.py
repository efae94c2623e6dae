"""What a trained student came from: its teacher, data, objective, steps and precision.

The trainer builds this record once (:func:`run_provenance`) and writes it, with the final step
count, into the exported ``student.safetensors`` (the ``provenance`` metadata of
:func:`recycle_distill.checkpoint.save_compact`); ``recycle-distill export`` carries it on into
its outputs and the Hugging Face model card states it. Paths are kept as the config gave them.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from recycle_distill.hf_export.model_card import file_sha256
from recycle_distill.training.config import TrainConfig
from recycle_distill.training.data import AudioEntry
from recycle_distill.training.teacher.sources import HUB_PREFIX
from recycle_distill.util.sample_rate import SAMPLE_RATE
from recycle_distill.util.version import VERSION

__all__ = ["run_provenance", "teacher_provenance", "data_provenance"]

# Weights files of a Hugging Face teacher folder, hashed in this order (the first present).
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def run_provenance(config: TrainConfig, teacher_kind: str, entries: Sequence[AudioEntry],
                   precision: str) -> dict[str, Any]:
    """The record of one run, without the step count (the export adds ``steps``)."""
    return {
        "teacher": teacher_provenance(config.teacher.teacher_model, teacher_kind, config.teacher.upstream_ckpt),
        "data": data_provenance(config, entries),
        "objective": config.objective,
        "precision": precision,
        "trainer": f"recycle-distill {VERSION}",
    }


def teacher_provenance(source: str, kind: str, upstream_ckpt: Optional[str] = None) -> dict[str, Any]:
    """``{"kind", "name", "sha256"}``: the teacher's model kind, its file (or folder, or S3PRL
    upstream) name, and the sha256 of the file its weights were read from (None when S3PRL
    fetched them itself)."""
    weights = _weights_file(source, upstream_ckpt)
    name = source if source.startswith(HUB_PREFIX) else os.path.basename(os.path.normpath(source))
    return {"kind": kind, "name": name, "sha256": file_sha256(weights) if weights else None}


def _weights_file(source: str, upstream_ckpt: Optional[str]) -> Optional[str]:
    if source.startswith(HUB_PREFIX) or not os.path.exists(source):  # an S3PRL upstream by name
        return upstream_ckpt if upstream_ckpt and os.path.isfile(upstream_ckpt) else None
    if os.path.isfile(source):
        return source
    present = [os.path.join(source, name) for name in HF_WEIGHTS if os.path.isfile(os.path.join(source, name))]
    return present[0] if present else None


def data_provenance(config: TrainConfig, entries: Sequence[AudioEntry]) -> dict[str, Any]:
    """``{"folders", "hours", "utterances"}`` of the training data (the validation set is not counted)."""
    data = config.data
    if data.manifest:
        folders = [data.manifest]
    elif data.audio_dir:
        folders = [data.audio_dir]
    else:
        folders = [os.path.join(data.libri_root or "", subset) for subset in data.train_set]
    seconds = sum(entry.num_samples / (entry.sample_rate or SAMPLE_RATE) for entry in entries)
    return {"folders": folders, "hours": round(seconds / 3600, 4), "utterances": len(entries)}
