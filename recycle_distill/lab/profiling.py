"""Parameters, FLOPs, wall time and peak memory of a model, next to HuBERT Base.

The library half of ``recycle-distill profile`` and of ``benchmarks/``:

* **Parameters**: all of ``model.parameters()``, and the same without the prediction heads
  (student ``proj_head.*``; HuBERT's pretraining ``final_proj.*`` / ``label_embs_concat``).
* **FLOPs**: counted by :class:`torch.utils.flop_counter.FlopCounterMode` while the model
  runs (no hand formula). torch 2.8 has no formula for two CPU kernels that are called
  without going through an op it knows: the flash-attention kernel behind
  ``F.scaled_dot_product_attention`` (attention would count as zero on CPU: HuBERT Base
  139.0 instead of 148.1 GFLOP per 10 s) and ``aten.mkldnn_convolution``, which our CNN
  calls directly in CPU inference. :data:`EXTRA_FLOP_FORMULAS` registers torch's own SDPA
  and convolution formulas for them. MACs = FLOPs / 2: every op the counter counts
  (matmul, conv, attention) is made of multiply-accumulates.
* **Time**: wall clock, median over repeats after warm-up, the compared models interleaved
  (A, B, A, B, ...) so that load from other processes hits them alike. Real-time factor =
  seconds of compute per second of audio (batch x length).
* **Peak memory**: on CPU, the torch profiler's allocator events (every CPU tensor
  allocation and free, in order) give the peak of live tensor bytes above the level before
  the forward: activations and outputs, not weights. ``tracemalloc`` cannot see torch's
  allocations and RSS also counts freed-but-kept heap pages, so neither is used. On CUDA,
  ``torch.cuda.max_memory_allocated`` minus the level before the forward.

The teacher is S3PRL's own ``HubertModel`` at the HuBERT Base shape with random weights
(94,697,600 parameters with its label embeddings and ``final_proj``), run as S3PRL's
upstream runs it: ``extract_features(wav, padding_mask=None, mask=False)``.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils import flop_counter

from recycle_distill.util.sample_rate import SAMPLE_RATE as _SAMPLE_RATE
from recycle_distill.training.teacher.random_teacher import HUBERT_BASE_CFG, HUBERT_BASE_NUM_LABELS

logger = logging.getLogger(__name__)

__all__ = [
    "HUBERT_BASE_CFG",
    "HUBERT_BASE_NUM_LABELS",
    "STUDENT_HEAD_PREFIXES",
    "TEACHER_HEAD_PREFIXES",
    "EXTRA_FLOP_FORMULAS",
    "MemoryMeasurement",
    "ModelProfile",
    "ParamCount",
    "ProfileTarget",
    "build_hubert_base",
    "count_flops",
    "count_flops_by_op",
    "count_parameters",
    "fused_attention_flops",
    "make_waveforms",
    "peak_memory",
    "profile_models",
    "student_forward",
    "synchronize",
    "teacher_forward",
    "time_interleaved",
]

SAMPLE_RATE = _SAMPLE_RATE  # re-exported: callers read profiling.SAMPLE_RATE

# HuBERT Base's cfg lives with the random teacher builder (the one source of its shape).
STUDENT_HEAD_PREFIXES = ("proj_head.",)
TEACHER_HEAD_PREFIXES = ("final_proj.", "label_embs_concat")


# ----------------------------------------------------------------------------- FLOPs
def _sdpa_cpu_flops(query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of ``_scaled_dot_product_flash_attention_for_cpu`` (shapes (B, H, T, d))."""
    return flop_counter.sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of the CPU flash-attention backward."""
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def _mkldnn_conv_flops(x, w, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of ``aten.mkldnn_convolution`` (called directly by our CPU inference path)."""
    return flop_counter.conv_flop_count(x, w, out_shape, transposed=False)


def _extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    formulas: dict[Any, Callable[..., int]] = {}
    ops = torch.ops.aten
    if hasattr(ops, "mkldnn_convolution"):
        formulas[ops.mkldnn_convolution] = _mkldnn_conv_flops
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu"):
        formulas[ops._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        formulas[ops._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward_flops
    # Only fill gaps: a torch that counts these itself keeps its own formula.
    return {op: fn for op, fn in formulas.items() if op not in flop_counter.flop_registry}


EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = _extra_flop_formulas()
"""Formulas added to FlopCounterMode's registry: attention kernels it does not count."""


def count_flops_by_op(forward: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of one call of ``forward`` per aten op (FlopCounterMode + :data:`EXTRA_FLOP_FORMULAS`).

    Runs ``forward`` once under ``torch.inference_mode``.
    """
    with torch.inference_mode():
        with flop_counter.FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
            forward()
    return {str(op): int(count) for op, count in counter.get_flop_counts()["Global"].items()}


def count_flops(forward: Callable[[], Any]) -> int:
    """Total FLOPs of one call of ``forward`` (see :func:`count_flops_by_op`)."""
    return sum(count_flops_by_op(forward).values())


def fused_attention_flops(by_op: Mapping[str, int]) -> int:
    """The part of a :func:`count_flops_by_op` result spent in fused attention kernels."""
    return sum(count for op, count in by_op.items() if "scaled_dot_product" in op or "flash_attention" in op)


# ------------------------------------------------------------------------ parameters
@dataclass(frozen=True)
class ParamCount:
    """Parameter counts: ``total`` and ``without_heads`` (prediction/pretraining heads removed)."""

    total: int
    without_heads: int


def count_parameters(model: nn.Module, head_prefixes: Sequence[str] = ()) -> ParamCount:
    """Count ``model``'s parameters, and those whose name does not start with ``head_prefixes``."""
    total = heads = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if name.startswith(tuple(head_prefixes)):
            heads += param.numel()
    return ParamCount(total, total - heads)


# --------------------------------------------------------------------------- models
def build_hubert_base(seed: int = 0, num_labels: int = HUBERT_BASE_NUM_LABELS) -> nn.Module:
    """S3PRL's ``HubertModel`` at the HuBERT Base shape, random weights, eval mode.

    Label embeddings and ``final_proj`` are kept so the count matches the released file
    (94,697,600 parameters); inference never runs them.
    """
    from recycle_distill.s3prl.compat import apply_compat

    apply_compat()  # s3prl's package import touches torchaudio
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    names = {f.name for f in dataclasses.fields(HubertConfig)}
    cfg = HubertConfig(**{k: v for k, v in HUBERT_BASE_CFG.items() if k in names})
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)
        # S3PRL logs the whole config at INFO on every build.
        hubert_logger = logging.getLogger(HubertModel.__module__)
        level = hubert_logger.level
        hubert_logger.setLevel(max(level, logging.WARNING))
        try:
            # HubertModel only needs len() of each label dictionary.
            model = HubertModel(cfg, HubertPretrainingConfig(), [list(range(num_labels))])
        finally:
            hubert_logger.setLevel(level)
    return model.eval()


def teacher_forward(model: nn.Module, dtype: Optional[torch.dtype] = None) -> Callable[[Tensor], Any]:
    """The call S3PRL's HuBERT upstream makes: (B, S) waves -> (B, T, 768) last layer, mask.

    ``dtype``: cast the waves to it first (a bf16 teacher takes bf16 input).
    """

    def forward(waveforms: Tensor) -> Any:
        if dtype is not None:
            waveforms = waveforms.to(dtype)
        return model.extract_features(waveforms, padding_mask=None, mask=False)

    return forward


def student_forward(model: nn.Module) -> Callable[[Tensor], Any]:
    """A student's plain forward: (B, S) equal-length waves -> :class:`StudentOutput`."""

    def forward(waveforms: Tensor) -> Any:
        return model(waveforms)

    return forward


def make_waveforms(batch: int, seconds: float, seed: int = 0, device: str = "cpu") -> Tensor:
    """(batch, seconds * 16000) float32 noise, reproducible."""
    generator = torch.Generator().manual_seed(seed)
    waves = torch.randn(batch, int(round(seconds * SAMPLE_RATE)), generator=generator)
    return waves.to(device)


# --------------------------------------------------------------------- time, memory
def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    forwards: Mapping[str, Callable[[], Any]],
    repeats: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
) -> dict[str, list[float]]:
    """Wall seconds of each callable, ``repeats`` times, in round-robin order after ``warmup`` rounds.

    Interleaving spreads load from other processes over all the compared callables alike;
    take the median of each list.
    """
    times: dict[str, list[float]] = {name: [] for name in forwards}
    with torch.inference_mode():
        for round_index in range(warmup + repeats):
            for name, forward in forwards.items():
                synchronize(device)
                start = time.perf_counter()
                forward()
                synchronize(device)
                if round_index >= warmup:
                    times[name].append(time.perf_counter() - start)
    return times


@dataclass(frozen=True)
class MemoryMeasurement:
    """Peak bytes of live tensors during a call, above the level before it; ``method`` says how."""

    peak_bytes: Optional[int]
    method: str


CPU_MEMORY_METHOD = "torch profiler CPU allocator events: peak live tensor bytes above the pre-forward level"
CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated above the pre-forward level"


def _cpu_peak_from_profiler(forward: Callable[[], Any]) -> Optional[int]:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            forward()
    try:
        # Each "[memory]" record is one allocation (+bytes) or free (-bytes) with a timestamp.
        events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        records = sorted(
            ((event.start_ns(), event.nbytes()) for event in events
             if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU),
        )
    except AttributeError as err:  # the profiler's result API moved
        logger.warning("cannot read allocator events from the torch profiler (%s); peak memory not measured", err)
        return None
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_memory(forward: Callable[[], Any], device: str | torch.device = "cpu") -> MemoryMeasurement:
    """Peak extra memory of one call of ``forward`` (see the module docstring for the method)."""
    if torch.device(device).type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            forward()
        synchronize(device)
        return MemoryMeasurement(torch.cuda.max_memory_allocated(device) - before, CUDA_MEMORY_METHOD)
    return MemoryMeasurement(_cpu_peak_from_profiler(forward), CPU_MEMORY_METHOD)


# -------------------------------------------------------------------------- profiles
@dataclass
class ModelProfile:
    """What ``recycle-distill profile`` reports for one model at one input size.

    Attributes:
        name: label. params: :class:`ParamCount`. flops: per forward of the whole batch.
        batch, seconds: the input, (batch, seconds * 16000) samples.
        times: wall seconds of each timed forward. peak_memory_bytes, memory_method: see
            :func:`peak_memory` (None when not measured).
    """

    name: str
    params: ParamCount
    flops: int
    batch: int
    seconds: float
    times: list[float] = field(default_factory=list)
    peak_memory_bytes: Optional[int] = None
    memory_method: str = ""
    flops_by_op: dict[str, int] = field(default_factory=dict)

    @property
    def fused_attention_flops(self) -> int:
        """FLOPs in fused attention kernels (zero in plain FlopCounterMode on CPU, torch 2.8)."""
        return fused_attention_flops(self.flops_by_op)

    @property
    def macs(self) -> int:
        return self.flops // 2

    @property
    def median_time(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def real_time_factor(self) -> float:
        """Compute seconds per second of audio."""
        return self.median_time / (self.batch * self.seconds)

    @property
    def gflops_per_second(self) -> float:
        return self.flops / self.median_time / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params_total": self.params.total,
            "params_without_heads": self.params.without_heads,
            "flops": self.flops,
            "flops_fused_attention": self.fused_attention_flops,
            "flops_by_op": self.flops_by_op,
            "macs": self.macs,
            "batch": self.batch,
            "seconds": self.seconds,
            "times_s": self.times,
            "median_time_s": self.median_time,
            "real_time_factor": self.real_time_factor,
            "gflops_per_s": self.gflops_per_second,
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory_method": self.memory_method,
        }


@dataclass
class ProfileTarget:
    """A model to profile: the module, how to call it on waveforms, and its head prefixes.

    ``counted_model`` / ``counted_forward``, when given, are what parameters and FLOPs are
    counted on (e.g. the fp32 plain-block student behind a bf16 or int8 copy: int8 Linears
    hide their weights from ``parameters()`` and run kernels FlopCounterMode does not see,
    and a FLOP is a FLOP in any precision); ``model`` and ``forward`` are what is timed and
    measured for memory.
    """

    name: str
    model: nn.Module
    forward: Callable[[Tensor], Any]
    head_prefixes: Sequence[str] = ()
    counted_model: Optional[nn.Module] = None
    counted_forward: Optional[Callable[[Tensor], Any]] = None


def profile_models(
    targets: Sequence[ProfileTarget],
    seconds: float = 10.0,
    batch: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    measure_memory: bool = True,
    seed: int = 0,
) -> list[ModelProfile]:
    """Profile every target on the same (batch, seconds) noise input; timings interleaved.

    Parameters and FLOPs come from each target's ``counted_model`` / ``counted_forward`` where
    set (see :class:`ProfileTarget`), times and memory from its ``model`` / ``forward``.
    """
    waves = make_waveforms(batch, seconds, seed, str(device))
    profiles = []
    for target in targets:
        target.model.to(device).eval()
        counted = target.counted_model if target.counted_model is not None else target.model
        counted_forward = target.counted_forward or target.forward
        counted.to(device).eval()
        by_op = count_flops_by_op(lambda: counted_forward(waves))
        profiles.append(
            ModelProfile(
                name=target.name,
                params=count_parameters(counted, target.head_prefixes),
                flops=sum(by_op.values()),
                batch=batch,
                seconds=seconds,
                flops_by_op=by_op,
            )
        )
        logger.info("%s: %.2f GFLOP per forward", target.name, profiles[-1].flops / 1e9)
    if repeats > 0:
        times = time_interleaved(
            {t.name: (lambda t=t: t.forward(waves)) for t in targets}, repeats, warmup, device
        )
        for profile, target in zip(profiles, targets):
            profile.times = times[target.name]
    if measure_memory:
        for profile, target in zip(profiles, targets):
            measured = peak_memory(lambda target=target: target.forward(waves), device)
            profile.peak_memory_bytes, profile.memory_method = measured.peak_bytes, measured.method
    return profiles
