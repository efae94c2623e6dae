"""Any S3PRL upstream as a frozen teacher, through S3PRL's own upstream and its ``hidden_states``.

Upstreams whose model is S3PRL's HubertModel, WavLM or Wav2Vec2Model keep the model-class
path (:class:`~recycle_distill.training.teacher.teacher.Teacher`), where the teacher can run a masked
pass. Every other upstream (data2vec, DistilHuBERT, TERA, Mockingjay, ...) is run as S3PRL
runs it for SUPERB: a list of waves in, the list of layer-wise ``hidden_states`` out.

* ``teacher.hidden_state_indices`` picks, for each student layer, an index of that list as
  S3PRL numbers it (0 is usually the pre-encoder feature; DistilHuBERT returns the feature,
  its layers, then its prediction heads). Default: the student's layers spread over indices
  1..H-1, the last on the last.
* ``teacher.target: weighted_sum`` makes the last student layer's target a fixed softmax-
  weighted sum of all H states (``teacher.weighted_sum_weights``, or the ``weights`` of a
  trained S3PRL featurizer in a downstream checkpoint, ``teacher.featurizer_ckpt``). It is
  exposed as one more state, index H.
* Frames are brought onto the student's grid (:mod:`.frame_rate`); the padding mask is the
  student's own. The upstream stays in eval mode, frozen, under ``no_grad``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from recycle_distill.students.config import ConfigError
from recycle_distill.students.blocks.masks import conv_output_lengths, lengths_to_padding_mask
from recycle_distill.training.teacher.frame_rate import check_rates, resample_frames
from recycle_distill.training.teacher.layer_mapping import default_layer_mapping
from recycle_distill.training.teacher.teacher import TeacherOutput

logger = logging.getLogger(__name__)

__all__ = ["UpstreamTeacher", "check_objective", "upstream_hub_kwargs", "featurizer_weights", "prepare_teacher",
           "teacher_layer_mapping", "UPSTREAM_OBJECTIVES"]

STUDENT_RATE = 320
# The released students' CNN (10,5) (3,2)x4 (2,2)x2; replaced by the real student's rule in match_student.
DEFAULT_CONV = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
UPSTREAM_OBJECTIVES = ("star", "layer_hints", "fithubert")
TARGETS = ("layers", "weighted_sum")


def upstream_hub_kwargs(section: Any) -> dict[str, Any]:
    """``ckpt`` / ``model_config`` for S3PRL's hub entry from ``teacher.upstream_ckpt`` / ``upstream_model_config``."""
    kwargs = {}
    if getattr(section, "upstream_ckpt", None):
        kwargs["ckpt"] = section.upstream_ckpt
    if getattr(section, "upstream_model_config", None):
        kwargs["model_config"] = section.upstream_model_config
    return kwargs


def check_objective(teacher: nn.Module, objective: str) -> None:
    """Refuse, before any training, an objective the teacher cannot serve."""
    if getattr(teacher, "kind", None) != "upstream" or objective in UPSTREAM_OBJECTIVES:
        return
    raise ConfigError(
        f"train.objective: {objective} distillation cannot use the S3PRL upstream teacher {teacher.source}: masking "
        f"distillation needs the teacher's own masked pass (its mask embedding put in place of the masked frames "
        f"inside the model), which only the HuBERT / WavLM / wav2vec 2.0 model classes expose, not S3PRL's "
        f"upstream interface; with this teacher use train.objective 'star' (STaRHuBERT), 'layer_hints' (any "
        f"family with heads) or 'fithubert' (FitHuBERT)"
    )


def featurizer_weights(path: str) -> list[float]:
    """The raw ``weights`` of the trained S3PRL featurizer in a downstream checkpoint."""
    from recycle_distill.checkpoint.safe_load import safe_torch_load

    loaded = safe_torch_load(path)
    featurizer = loaded.get("Featurizer") if isinstance(loaded, dict) else None
    weights = featurizer.get("weights") if isinstance(featurizer, dict) else None
    if not isinstance(weights, Tensor) or weights.dim() != 1:
        raise ConfigError(f"teacher.featurizer_ckpt: {path} has no 'Featurizer' -> 'weights' vector "
                          f"(an S3PRL downstream checkpoint has one)")
    return [float(w) for w in weights]


class UpstreamTeacher(nn.Module):
    """A frozen S3PRL upstream expert with the :class:`Teacher` interface the objectives use.

    Args:
        expert: S3PRL's upstream (``UpstreamExpert`` / ``S3PRLUpstream``): list of (S,) waves in,
            ``{"hidden_states": [H x (B, T_t, D)], ...}`` out, ``get_downsample_rates``.
        source: ``s3prl:<name>``, for messages.
    """

    kind = "upstream"

    def __init__(self, expert: nn.Module, source: str) -> None:
        super().__init__()
        self.expert = expert
        self.source = source
        rate = expert.get_downsample_rates("hidden_states") if hasattr(expert, "get_downsample_rates") else None
        check_rates(rate, STUDENT_RATE, source)
        self.teacher_rate = int(rate)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)
        self.frame_rule: Callable[[Tensor], Tensor] = lambda lengths: conv_output_lengths(lengths, DEFAULT_CONV)
        self.hidden_state_indices: Optional[list[int]] = None
        self.sum_weights: Optional[Tensor] = None
        probe = self._states([torch.sin(torch.arange(16000, dtype=torch.float32) * 0.05) * 0.1])
        self.num_states = len(probe)
        self.state_widths = [int(state.shape[-1]) for state in probe]
        logger.info("%s: S3PRL upstream teacher (%s), %d hidden_states of widths %s, %d samples a frame",
                    source, type(expert).__name__, self.num_states, sorted(set(self.state_widths)), self.teacher_rate)

    # ---------------------------------------------------------------- setup
    def configure(self, hidden_state_indices: Optional[Sequence[int]], target: str = "layers",
                  weights: Optional[Sequence[float]] = None) -> None:
        """Apply ``teacher.hidden_state_indices`` / ``target`` / weighted-sum weights (checked here)."""
        if target not in TARGETS:
            raise ConfigError(f"teacher.target: {', '.join(TARGETS)}, got {target!r}")
        if hidden_state_indices is not None:
            indices = list(hidden_state_indices)
            for index in indices:
                if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.num_states:
                    raise ConfigError(f"teacher.hidden_state_indices: {index!r} is not an index of the "
                                      f"{self.num_states} hidden_states of {self.source} (0..{self.num_states - 1})")
            self.hidden_state_indices = indices
        if target == "weighted_sum":
            if weights is None:
                raise ConfigError("teacher.target weighted_sum needs teacher.weighted_sum_weights or "
                                  "teacher.featurizer_ckpt")
            if len(weights) != self.num_states or not all(math.isfinite(float(w)) for w in weights):
                raise ConfigError(f"teacher.weighted_sum_weights: {self.num_states} finite numbers (one per hidden "
                                  f"state of {self.source}), got {len(weights)}")
            if len(set(self.state_widths)) != 1:
                raise ConfigError(f"teacher.target weighted_sum: the hidden_states of {self.source} differ in width")
            self.sum_weights = torch.softmax(torch.tensor([float(w) for w in weights]), dim=0)

    def match_student(self, student: nn.Module) -> None:
        """Use the student's own frame rule (its CNN) for the target grid and the padding mask."""
        model = getattr(student, "module", student)
        self.frame_rule = model.frame_lengths

    def student_layer_mapping(self, num_student_layers: int) -> list[int]:
        """Index of the target state for each student layer (index H = the weighted sum)."""
        if self.hidden_state_indices is not None:
            if len(self.hidden_state_indices) != num_student_layers:
                raise ConfigError(f"teacher.hidden_state_indices has {len(self.hidden_state_indices)} entries but the "
                                  f"student has {num_student_layers} layers")
            mapping = list(self.hidden_state_indices)
        elif self.num_states > 1:
            mapping = [1 + index for index in default_layer_mapping(num_student_layers, self.num_states - 1)]
        else:
            mapping = [0] * num_student_layers
        if self.sum_weights is not None:
            mapping[-1] = self.num_states
        return mapping

    # ------------------------------------------------------------ interface
    @property
    def num_layers(self) -> int:
        """Addressable targets: the H hidden states, plus the weighted sum when configured."""
        return self.num_states + (1 if self.sum_weights is not None else 0)

    @property
    def embed_dim(self) -> int:
        return self.state_widths[-1]

    @property
    def downsample_rate(self) -> int:
        return self.teacher_rate

    def train(self, mode: bool = True) -> "UpstreamTeacher":
        """Stay in eval mode: some S3PRL upstreams build their model in training mode."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, hidden_states={self.num_states}, rate={self.teacher_rate}"

    def frame_padding_mask(self, lengths: Tensor, num_samples: int) -> Tensor:
        """(B, T) padding mask on the student's grid (True = pad)."""
        frames = int(self.frame_rule(torch.tensor([int(num_samples)]))[0])
        return lengths_to_padding_mask(self.frame_rule(lengths.to(torch.long).cpu()), frames).to(lengths.device)

    def _states(self, wavs: list[Tensor]) -> list[Tensor]:
        with torch.no_grad():
            output = self.expert(wavs)
        states = output.get("hidden_states") if isinstance(output, dict) else None
        if not states:
            raise ConfigError(f"{self.source}: the upstream returned no hidden_states")
        return list(states)

    @torch.no_grad()
    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None,
                mask_indices: Optional[Tensor] = None) -> TeacherOutput:
        """(B, S) waves, (B,) lengths -> every hidden state (and the weighted sum) as (B, T, D) on the student's grid."""
        if mask_indices is not None:
            raise ConfigError(f"{self.source}: an S3PRL upstream teacher has no masked pass")
        batch, num_samples = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long, device=waveforms.device)
        wavs = [waveforms[row, : int(lengths[row])] for row in range(batch)]
        padding_mask = self.frame_padding_mask(lengths, num_samples).to(waveforms.device)
        frames = padding_mask.shape[1]
        states = [resample_frames(state, self.teacher_rate, STUDENT_RATE, frames) for state in self._states(wavs)]
        if self.sum_weights is not None:
            weights = self.sum_weights.to(device=states[0].device, dtype=states[0].dtype)
            states.append(sum(w * s for w, s in zip(weights, states)))
        return TeacherOutput(states, padding_mask, states[-1])

    def forward_masked_and_unmasked(self, *args: Any, **kwargs: Any) -> tuple[TeacherOutput, TeacherOutput]:
        check_objective(self, "masking")
        raise AssertionError("unreachable")


def prepare_teacher(teacher: nn.Module, config: Any) -> None:
    """Right after loading: apply the upstream keys and refuse what this teacher cannot do.

    Args:
        config: the :class:`~recycle_distill.training.config.TrainConfig`.
    """
    section = config.teacher
    upstream = getattr(teacher, "kind", None) == "upstream"
    if not upstream:
        used = [key for key in ("hidden_state_indices", "weighted_sum_weights", "featurizer_ckpt")
                if getattr(section, key) is not None] + (["target"] if section.target != "layers" else [])
        if used:
            raise ConfigError(f"teacher.{used[0]}: applies to S3PRL upstream teachers of other model classes; "
                              f"{teacher.source} is a {teacher.kind} model-class teacher (use teacher.layer_mapping)")
        return
    if section.layer_mapping is not None:
        raise ConfigError(f"teacher.layer_mapping indexes encoder layers of model-class teachers; {teacher.source} "
                          f"is an S3PRL upstream teacher: use teacher.hidden_state_indices")
    check_objective(teacher, config.objective)
    weights = section.weighted_sum_weights
    if weights is None and section.featurizer_ckpt:
        weights = featurizer_weights(section.featurizer_ckpt)
    teacher.configure(section.hidden_state_indices, section.target, weights)


def teacher_layer_mapping(teacher: nn.Module, student: nn.Module, config: Any) -> list[int]:
    """The target index of each student layer, for either kind of teacher."""
    from recycle_distill.training.teacher.layer_mapping import resolve_layer_mapping

    if getattr(teacher, "kind", None) == "upstream":
        teacher.match_student(student)
        return teacher.student_layer_mapping(config.student.encoder_layers)
    return resolve_layer_mapping(config.student.encoder_layers, teacher.num_layers, config.teacher.layer_mapping)
