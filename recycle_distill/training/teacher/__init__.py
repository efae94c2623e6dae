"""The distillation teacher: S3PRL's own HuBERT / WavLM / wav2vec 2.0 classes, no fairseq.

Typical trainer use::

    teacher = load_teacher("hubert_base_ls960.pt", mask_overrides=cfg["teacher"])
    pad = teacher.frame_padding_mask(lengths, wavs.shape[1])            # (B, T)
    mask = teacher.compute_mask_indices(pad, generator=step_seed)        # (B, T)
    masked, unmasked = teacher.forward_masked_and_unmasked(wavs, lengths, mask)
    pairs = resolve_layer_mapping(student_layers, teacher.num_layers)    # student i <- teacher pairs[i]
"""

from recycle_distill.training.teacher.fairseq_checkpoint import (
    convert_to_s3prl,
    detect_kind,
    read_teacher_checkpoint,
)
from recycle_distill.checkpoint.hf_keys import HF_KEY_TABLE
from recycle_distill.training.teacher.hf_checkpoint import read_hf_hubert_dir
from recycle_distill.training.teacher.layer_mapping import default_layer_mapping, resolve_layer_mapping
from recycle_distill.training.teacher.span_masks import SpanMaskConfig, compute_mask_indices
from recycle_distill.training.teacher.s3prl_models import (
    KINDS,
    TeacherCheckpointError,
    TeacherSpec,
    build_s3prl_model,
)
from recycle_distill.training.teacher.sources import load_teacher, load_teacher_from_hub
from recycle_distill.training.teacher.teacher import Teacher, TeacherOutput

__all__ = [
    "KINDS",
    "HF_KEY_TABLE",
    "SpanMaskConfig",
    "Teacher",
    "TeacherCheckpointError",
    "TeacherOutput",
    "TeacherSpec",
    "build_s3prl_model",
    "compute_mask_indices",
    "convert_to_s3prl",
    "default_layer_mapping",
    "detect_kind",
    "load_teacher",
    "load_teacher_from_hub",
    "read_hf_hubert_dir",
    "read_teacher_checkpoint",
    "resolve_layer_mapping",
]
