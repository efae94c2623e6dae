"""The training configuration: typed sections, reference YAMLs accepted, typos caught early.

A training YAML has the reference sections ``teacher``, ``train``, ``distiller``, ``optimizer``,
``data`` (and ``specaug``, read but unused by the released recipes), plus an optional
top-level ``family``. Unknown keys in every section but ``distiller`` are errors that suggest
the closest valid key; inside ``distiller`` they only warn, as in the runtime.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

from recycle_distill import families
from recycle_distill.students.build import resolve_config
from recycle_distill.util.config_check import Range, check_known, check_type, is_number
from recycle_distill.students.config import ConfigError, StudentConfig, load_config_dict
from recycle_distill.util.messages import short_repr
from recycle_distill.util.sample_rate import SAMPLE_RATE
from recycle_distill.util.safe_yaml import safe_load_bounded

logger = logging.getLogger(__name__)


__all__ = ["TrainConfig", "load_train_config", "list_recipes", "list_examples", "recipe_path", "config_help"]


def _or_list(names: Sequence[str]) -> str:
    """``a, b, c or d`` (for messages that list choices)."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _key(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class TeacherSection:
    teacher_model: str = _key("", "teacher: fairseq .pt (HuBERT/WavLM/wav2vec 2.0), S3PRL converted file, "
                                  "'s3prl:<upstream name>', or a Hugging Face model directory")
    mask_prob: float = _key(0.8, "fraction of frames the teacher's span masking covers")
    mask_length: int = _key(10, "span length in frames")
    mask_selection: str = _key("uniform", "span length distribution (fairseq names)")
    mask_other: float = _key(0.0, "secondary span-length parameter (fairseq)")
    no_mask_overlap: bool = _key(True, "spans may not overlap")
    mask_min_space: int = _key(1, "frames kept between spans")
    layer_mapping: Optional[list] = _key(None, "teacher layer (0-based) for each student layer; "
                                               "default spreads them evenly (12 -> 12 is the identity)")
    normalize: Optional[bool] = _key(None, "override the teacher's per-utterance wave normalisation")
    # S3PRL upstream teachers of other model classes (recycle_distill.training.teacher.upstream_teacher).
    upstream_ckpt: Optional[str] = _key(None, "checkpoint for the S3PRL hub entry of an s3prl:<name> teacher (S3PRL's -k)")
    upstream_model_config: Optional[str] = _key(None, "config for that hub entry (S3PRL's -g)")
    hidden_state_indices: Optional[list] = _key(None, "upstream teachers: index of S3PRL's hidden_states for each "
                                                      "student layer (0 = usually the pre-encoder feature)")
    target: str = _key("layers", "layers, or weighted_sum: the last student layer learns a fixed weighted sum of "
                                 "the upstream's hidden_states")
    weighted_sum_weights: Optional[list] = _key(None, "raw weights of the sum (softmaxed, as S3PRL's featurizer does)")
    featurizer_ckpt: Optional[str] = _key(None, "S3PRL downstream checkpoint whose trained featurizer weights to use")


@dataclass
class TrainSection:
    base_dir: str = _key("./", "folder that a relative output_dir is resolved against")
    output_dir: str = _key("runs/student", "where checkpoints, TensorBoard logs and the export go")
    checkpoint: Optional[str] = _key(None, "checkpoint to resume from ('last' = newest in output_dir)")
    num_epochs: int = _key(1, "epochs to train (ignored when max_steps > 0)")
    max_steps: int = _key(0, "optimizer steps to train; 0 = num_epochs")
    gpus: int = _key(1, "reference key; the process count comes from torchrun")
    batch_size: int = _key(8, "utterances per device and micro-batch")
    accumulate_grad_batches: int = _key(1, "micro-batches per optimizer step")
    use_fp16: bool = _key(False, "reference key: true means precision fp16 (on CUDA)")
    precision: Optional[str] = _key(None, "fp32, bf16 or fp16; bf16: the teacher cast to bf16, the student "
                                          "under autocast, float32 losses and weights; fp16 (CUDA): autocast "
                                          "and a grad scaler; default fp32, or fp16 when use_fp16")
    use_apex: bool = _key(False, "reference key; apex is not supported (must be false)")
    monitor_losses: bool = _key(True, "log every loss term (always on)")
    rec_loss_weight: float = _key(1.0, "weight of the last (reconstruction) layer")
    rec_loss_type: str = _key("mse", "only mse")
    distil_random_layer: Optional[int] = _key(None, "how many lower layers are hint layers (a random subset, resampled "
                                                    "per epoch); default: every layer below the last "
                                                    "(distiller.encoder_layers - 1: 11 for 12 layers, 3 for 4)")
    random_layer_weight: float = _key(0.1, "weight of each hint layer")
    delete_projections: bool = _key(False, "export without prediction heads (FitHuBERT keeps the last)")
    specaug: bool = _key(False, "reference key; SpecAugment on student input is not supported (must be false)")
    mask_prob_schedule: str = _key("", "reference key; schedules are not supported (must be empty)")
    objective: Optional[str] = _key(None, f"{_or_list(families.OBJECTIVES)}; default from the family")
    exclude_padding: bool = _key(False, "drop padded frames from the masking loss (reference: counted)")
    star_normalization: str = _key("dim", "STaR Gram normalisation: none, dim or cosine")
    gradient_clip: float = _key(10.0, "clip the gradient norm (0 = off)")
    seed: int = _key(1337, "seed of everything random (order, crops, masks, hint layers, init)")
    num_workers: int = _key(2, "DataLoader worker processes")
    max_audio_seconds: Optional[float] = _key(40.0, "read at most this many seconds of a file: longer ones are "
                                                    "cropped to a window at a random offset (counted in the log); "
                                                    "the default 40 crops no LibriSpeech utterance (35 s at most); "
                                                    "null = no limit")
    log_every_steps: int = _key(10, "TensorBoard/progress-bar logging period in optimizer steps")
    val_every_steps: int = _key(0, "validation period in steps (0 = at each epoch end)")
    save_every_steps: int = _key(0, "checkpoint period in steps (0 = at each epoch end)")
    keep_last: int = _key(3, "step checkpoints kept (the best-on-validation one is kept as well)")
    compile: bool = _key(False, "torch.compile the student")
    device: str = _key("auto", "auto, cpu, cuda or cuda:N")
    deterministic: bool = _key(False, "torch.use_deterministic_algorithms(True)")
    init_student: Optional[str] = _key(None, "initialise the student from this checkpoint (weights only)")
    blocks: str = _key("map_free", "map_free: a layer that reuses its predecessor's attention recomputes the map "
                                   "block by block, forward and backward (memory linear in length); plain: it "
                                   "keeps the (heads, T, T) map, as the original code does (same results within "
                                   "float rounding; dropout draws differ)")
    max_bad_steps: int = _key(5, "stop with an error after this many optimizer steps in a row are skipped "
                                 "for a non-finite loss or gradient")


@dataclass
class OptimizerSection:
    name: str = _key("AdamW_with_schedule", "only AdamW with linear warmup then linear decay (S3PRL's)")
    lr: float = _key(5.0e-4, "peak learning rate")
    warmup_proportion: float = _key(0.05, "fraction of steps with linear warmup")
    betas: list = _key([0.9, 0.98], "AdamW betas")
    eps: float = _key(1.0e-6, "AdamW eps")
    weight_decay: float = _key(1.0e-6, "AdamW weight decay")


@dataclass
class DataSection:
    bucketing_path: Optional[str] = _key(None, "folder of reference len_for_bucket <subset>.csv files")
    libri_root: Optional[str] = _key(None, "LibriSpeech root")
    train_set: list = _key(["train-clean-100"], "LibriSpeech subsets to train on")
    test_set: list = _key(["dev-clean"], "LibriSpeech subsets to validate on")
    manifest: Optional[str] = _key(None, "TSV manifest (fairseq style) instead of LibriSpeech")
    audio_dir: Optional[str] = _key(None, "any folder of audio files instead of LibriSpeech")
    valid_manifest: Optional[str] = _key(None, "TSV manifest for validation")
    valid_audio_dir: Optional[str] = _key(None, "folder of validation audio")
    cache_dir: Optional[str] = _key(None, "where scanned manifests are cached")


SECTIONS: dict[str, type] = {
    "teacher": TeacherSection,
    "train": TrainSection,
    "optimizer": OptimizerSection,
    "data": DataSection,
}
FREE_SECTIONS = ("specaug",)  # read for completeness, unused (specaug must stay off)


@dataclass
class TrainConfig:
    """A whole training run."""

    teacher: TeacherSection
    train: TrainSection
    optimizer: OptimizerSection
    data: DataSection
    student: StudentConfig
    family: str
    source: str = "config"
    raw_distiller: dict = field(default_factory=dict)

    @property
    def objective(self) -> str:
        return self.train.objective or families.family(self.family).default_objective

    @property
    def precision(self) -> str:
        return self.train.precision or ("fp16" if self.train.use_fp16 else "fp32")

    @property
    def output_dir(self) -> str:
        return os.path.join(self.train.base_dir, self.train.output_dir)

    def to_dict(self) -> dict[str, Any]:
        data = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        data["distiller"] = self.student.to_dict()
        data["family"] = self.family
        return data


def _shipped(folder: str) -> list[str]:
    entries = (resources.files("recycle_distill.training") / folder).iterdir()
    return sorted(entry.name[:-5] for entry in entries if entry.name.endswith(".yaml"))


def list_recipes() -> list[str]:
    """The shipped recipes (published students with the reference hyper-parameters)."""
    return _shipped("recipes")


def list_examples() -> list[str]:
    """The shipped example runs (``examples/``: tiny, minutes on a CPU; see :mod:`recycle_distill.training.example`)."""
    return _shipped("examples")


def recipe_path(name: str) -> str:
    """The YAML of a shipped recipe or example run."""
    folder = "examples" if name in list_examples() else "recipes"
    return str(resources.files("recycle_distill.training") / folder / f"{name}.yaml")


def load_train_config(
    source: Union[str, os.PathLike, Mapping[str, Any]], overrides: Sequence[str] = ()
) -> TrainConfig:
    """Read a training YAML (path, recipe or example name, or dict) and apply ``section.key=value`` overrides."""
    if (isinstance(source, (str, os.PathLike)) and not os.path.exists(source)
            and str(source) in list_recipes() + list_examples()):
        source = recipe_path(str(source))
    data, where = load_config_dict(source)
    data = {key: (dict(value) if isinstance(value, Mapping) else value) for key, value in data.items()}
    for item in overrides:
        _apply_override(data, item)
    known = [*SECTIONS, "distiller", "family"]
    check_known(sorted(set(data) - set(FREE_SECTIONS), key=str), known,
                lambda name, hint: f"{where}: unknown section '{name}'{hint}")
    sections = {name: _build_section(cls, data.get(name) or {}, name, where) for name, cls in SECTIONS.items()}
    if "distiller" not in data:
        raise ConfigError(f"{where}: no 'distiller' section (the student architecture)")
    student, family = resolve_config({"distiller": data["distiller"], **({"family": data["family"]} if "family" in data else {})})
    config = TrainConfig(**sections, student=student, family=family, source=where, raw_distiller=dict(data["distiller"]))
    if config.train.distil_random_layer is None:  # follows the student: every layer below its last
        config.train.distil_random_layer = student.encoder_layers - 1
    _check(config)
    return config


def _build_section(cls: type, values: Mapping[str, Any], name: str, where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_known(values, fields, lambda shown, hint: f"{where}: unknown key '{name}.{shown}'{hint}",
                prefix=name + ".", show=_shown_key)
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(value, fields[key], f"{name}.{key}", where)
    return cls(**kwargs)


def _shown_key(key: Any) -> str:
    """A key as the unknown-key message shows it: itself, or a bounded repr when long or not text."""
    return key if isinstance(key, str) and len(key) <= 100 else short_repr(key)


def _coerce(value: Any, spec: dataclasses.Field, key: str, where: str) -> Any:
    """The value in its key's type (the shared rules of :func:`recycle_distill.util.config_check.check_type`)."""
    def message(expected: str) -> str:
        if value is None:
            return f"{where}: '{key}' may not be empty"
        return f"{where}: '{key}' expects {expected}, got {short_repr(value)}"
    return check_type(value, str(spec.type), message)


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected section.key=value")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2:
        raise ConfigError(f"override '{item}': expected section.key=value (e.g. train.batch_size=4)")
    section, name = parts
    try:
        value = safe_load_bounded(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{short_repr(item)}': the value is not valid YAML ({str(err).splitlines()[0][:100]})") from None
    target = data.setdefault(section, {})
    if not isinstance(target, dict):
        raise ConfigError(f"override '{item}': '{section}' is not a section")
    target[name] = value


# Every numeric key's valid range (the one checker's Range: closed ends unless said otherwise).
# Checked by load_train_config (and so by --check) before any data or teacher is loaded.
RANGES: dict[str, Range] = {
    "teacher.mask_prob": Range(0.0, 1.0),
    "teacher.mask_length": Range(1),
    "teacher.mask_other": Range(0.0),
    "teacher.mask_min_space": Range(0),
    "train.num_epochs": Range(0),
    "train.max_steps": Range(0),
    "train.gpus": Range(0),
    "train.batch_size": Range(1),
    "train.accumulate_grad_batches": Range(1),
    "train.rec_loss_weight": Range(0.0),
    "train.distil_random_layer": Range(0),
    "train.random_layer_weight": Range(0.0),
    "train.gradient_clip": Range(0.0),
    "train.seed": Range(0, 2**32 - 1),
    "train.num_workers": Range(0),
    "train.max_audio_seconds": Range(0.0, low_closed=False),
    "train.log_every_steps": Range(1),
    "train.val_every_steps": Range(0),
    "train.save_every_steps": Range(0),
    "train.keep_last": Range(1),
    "train.max_bad_steps": Range(1),
    "optimizer.lr": Range(0.0, low_closed=False),
    "optimizer.warmup_proportion": Range(0.0, 1.0, high_closed=False),
    "optimizer.eps": Range(0.0, low_closed=False),
    "optimizer.weight_decay": Range(0.0),
}
BETA = Range(0.0, 1.0, high_closed=False)  # each of optimizer.betas


def _check_ranges(config: TrainConfig) -> None:
    """Refuse non-finite numbers anywhere and numbers outside :data:`RANGES`."""
    for section in SECTIONS:
        for spec in dataclasses.fields(getattr(config, section)):
            value = getattr(getattr(config, section), spec.name)
            key = f"{section}.{spec.name}"
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key}: must be a finite number, got {value}")
            if key not in RANGES or value is None:
                continue
            if value not in RANGES[key]:
                raise ConfigError(f"{key}: must be in {RANGES[key]}, got {value:g}")
    betas = config.optimizer.betas
    if len(betas) != 2 or not all(is_number(b, within=BETA) for b in betas):
        raise ConfigError(f"optimizer.betas: must be two numbers in {BETA}, got {short_repr(betas)}")
    seconds = config.train.max_audio_seconds
    if seconds is not None:
        field = _receptive_field(config.student)
        if int(seconds * SAMPLE_RATE) < field:
            raise ConfigError(
                f"train.max_audio_seconds: {seconds:g} s is shorter than one student frame "
                f"({field} samples = {field / SAMPLE_RATE:g} s at {SAMPLE_RATE} Hz)"
            )


def _receptive_field(student: StudentConfig) -> int:
    """Samples the student's CNN needs for one output frame."""
    field, jump = 1, 1
    for _, kernel, stride in student.conv_feature_layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def _check(config: TrainConfig) -> None:
    _check_ranges(config)
    train, optimizer = config.train, config.optimizer
    if train.use_apex:
        raise ConfigError("train.use_apex: apex is not supported; use train.precision (bf16/fp16)")
    if train.specaug:
        raise ConfigError("train.specaug: SpecAugment on the student input is not supported by this trainer")
    if train.mask_prob_schedule:
        raise ConfigError("train.mask_prob_schedule: mask-probability schedules are not supported")
    if train.rec_loss_type != "mse":
        raise ConfigError(f"train.rec_loss_type: only 'mse' is supported, got {short_repr(train.rec_loss_type)}")
    if config.train.blocks not in ("map_free", "plain"):
        raise ConfigError(f"train.blocks: map_free or plain, got {short_repr(config.train.blocks)}")
    if config.precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision: fp32, bf16 or fp16, got {short_repr(config.precision)}")
    if config.objective not in families.OBJECTIVES:
        raise ConfigError(f"train.objective: {_or_list(families.OBJECTIVES)}, got {short_repr(config.objective)}")
    refusal = families.objective_refusal(config.objective, config.family)  # the family's row says which it takes
    if refusal is not None:
        raise ConfigError(f"train.objective: {refusal}")
    if config.teacher.target not in ("layers", "weighted_sum"):
        raise ConfigError(f"teacher.target: layers or weighted_sum, got {short_repr(config.teacher.target)}")
    if train.batch_size < 1 or train.accumulate_grad_batches < 1:
        raise ConfigError("train.batch_size and train.accumulate_grad_batches must be >= 1")
    if train.num_epochs < 1 and train.max_steps < 1:
        raise ConfigError("train.num_epochs or train.max_steps must be >= 1")
    if optimizer.name != "AdamW_with_schedule":
        raise ConfigError(f"optimizer.name: only AdamW_with_schedule is supported, got {short_repr(optimizer.name)}")
    if not 0.0 <= optimizer.warmup_proportion < 1.0:
        raise ConfigError("optimizer.warmup_proportion must be in [0, 1)")
    if len(optimizer.betas) != 2:
        raise ConfigError("optimizer.betas must be two numbers")
    if not 0 <= train.distil_random_layer <= config.student.encoder_layers - 1:
        raise ConfigError(
            f"train.distil_random_layer: {train.distil_random_layer} hint layers, but the student has only "
            f"{config.student.encoder_layers - 1} layers below the last"
        )
    if not config.teacher.teacher_model:
        raise ConfigError("teacher.teacher_model: no teacher given")
    data = config.data
    if not (data.libri_root or data.manifest or data.audio_dir or data.bucketing_path):
        raise ConfigError("data: give libri_root (+ train_set), manifest, or audio_dir")


def config_help() -> str:
    """Every key with its default and meaning, for ``--help``."""
    lines = ["configuration keys (YAML sections; override any with section.key=value):", ""]
    for name, cls in SECTIONS.items():
        lines.append(f"{name}:")
        for spec in dataclasses.fields(cls):
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
            lines.append(f"  {spec.name} (default {default!r}): {spec.metadata.get('help', '')}")
        lines.append("")
    lines.append("distiller: the student architecture (see recycle_distill.StudentConfig; unknown keys warn)")
    lines.append(f"family: {_or_list(list(families.FAMILIES))} (default: inferred from distiller)")
    lines.append("specaug: accepted and ignored (train.specaug must be false)")
    return "\n".join(lines)
