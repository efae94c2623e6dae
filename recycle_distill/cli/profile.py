"""Parameters, FLOPs, speed and peak memory of a student next to HuBERT Base.

  recycle-distill profile armhubert                      # a preset
  recycle-distill profile my_student.yaml --batch 4      # a reference -g YAML or ours
  recycle-distill profile ARMHuBERT-960h.ckpt --family armhubert -g armhubert-960.yaml
  recycle-distill profile armhubert --dtype bf16         # bf16 student and teacher
  recycle-distill profile armhubert --dtype int8 --plain # int8 Linears, plain blocks

The teacher is S3PRL's HubertModel at the HuBERT Base shape with random weights; both
models get the same noise input. FLOPs are counted by torch's FlopCounterMode while the
models run (CPU attention kernels included); times are medians of interleaved repeats
after a warm-up; peak memory is the live tensor peak above the pre-forward level (CPU:
torch profiler allocator events; CUDA: max_memory_allocated).

The student runs as users get it: through ``optimize_for_inference(student, --dtype)`` (the
fast CPU blocks; ``--plain`` keeps the plain ones). The teacher runs in bf16 for ``--dtype
bf16`` (a bf16 copy of the same weights) and in fp32 otherwise (int8 quantizes our students'
Linear layers; the teacher is S3PRL's model, left as S3PRL runs it). Parameters and FLOPs are
always counted on the fp32 models with the plain blocks: a precision changes the time, not the
arithmetic, and int8 Linears hide both their weights and their kernels from the counters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from recycle_distill.lab import profiling
from recycle_distill.inference import optimize_for_inference, parse_precision
from recycle_distill.students.build import build_student, list_presets, resolve_config
from recycle_distill.checkpoint import load_student
from recycle_distill.checkpoint.compact import is_safetensors, read_compact
from recycle_distill.students.config import ConfigError
from recycle_distill.students import FAMILIES, StudentModel

CONFIG_SUFFIXES = (".yaml", ".yml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"a preset ({', '.join(list_presets())}), a config YAML, or a checkpoint")
    parser.add_argument("--family", choices=sorted(FAMILIES), default=None,
                        help="student family (default: from the preset/config/compact file)")
    parser.add_argument("-g", "--model-config", default=None,
                        help="architecture YAML or preset for a checkpoint (see `recycle-distill convert`)")
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length in seconds (default 10)")
    parser.add_argument("--batch", type=int, default=1, help="utterances per forward (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per model (default 5; 0: no timing)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--no-teacher", action="store_true", help="profile the student alone")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--dtype", default="fp32",
                        help="student precision: fp32, bf16 or int8 (default fp32); bf16 also runs the teacher "
                             "in bf16, int8 leaves it in fp32")
    parser.add_argument("--plain", action="store_true",
                        help="profile the plain blocks (no optimize_for_inference fast paths)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")


def load_model(source: str, family: str | None, model_config: str | None) -> tuple[StudentModel, str]:
    """A student from a preset name, a config YAML or a checkpoint; returns (model, family)."""
    if source in list_presets() and not os.path.exists(source):
        model = build_student(source, family)
        return model, model.family
    if not os.path.exists(source):
        raise ConfigError(f"'{source}' is neither a preset ({', '.join(list_presets())}) nor an existing file")
    if source.endswith(CONFIG_SUFFIXES):
        model = build_student(source, family)
        return model, model.family
    if family is None and model_config is not None:
        _, family = resolve_config(model_config)
    if family is None and is_safetensors(source):
        family = read_compact(source)[1]
    if family is None:
        raise ConfigError(f"{source}: give the student family with --family (or the architecture with -g)")
    return load_student(source, family, model_config), family


def run(args: argparse.Namespace) -> int:
    # The CUDA build of torch logs an error from its profiler back end on GPU-less machines.
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.batch < 1 or args.seconds <= 0 or args.repeats < 0:
        print("error: --batch must be >= 1, --seconds > 0 and --repeats >= 0", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: CUDA is not available", file=sys.stderr)
        return 2
    try:
        precision = parse_precision(args.dtype, "--dtype")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if precision == "int8" and not args.device.startswith("cpu"):
        print("error: --dtype int8 (torch dynamic quantization) runs on the CPU only", file=sys.stderr)
        return 2
    try:
        student, family = load_model(args.model, args.family, args.model_config)
        runner = optimize_for_inference(student, precision, fast_paths=not args.plain)
    except (ConfigError, ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    name = os.path.basename(args.model) if os.path.exists(args.model) else args.model
    teacher_precision = "bf16" if precision == "bf16" else "fp32"
    targets = [profiling.ProfileTarget(name, runner, profiling.student_forward(runner),
                                       profiling.STUDENT_HEAD_PREFIXES, counted_model=student,
                                       counted_forward=profiling.student_forward(student))]
    if not args.no_teacher:
        targets.append(teacher_target(teacher_precision))
    profiles = profiling.profile_models(
        targets, seconds=args.seconds, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
        device=args.device, measure_memory=not args.no_memory,
    )
    setting = {
        "family": family, "device": args.device, "threads": torch.get_num_threads(), "dtype": precision,
        "student_blocks": "plain" if args.plain else "fast (optimize_for_inference)",
        "teacher_dtype": None if args.no_teacher else teacher_precision,
        "flops_counted_on": FLOPS_COUNTED_ON,
        "batch": args.batch, "seconds": args.seconds, "repeats": args.repeats, "warmup": args.warmup,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps({"setting": setting, "profiles": [p.to_dict() for p in profiles]}, indent=1))
        return 0
    print(f"{name} ({family}) vs HuBERT Base (S3PRL HubertModel, random weights)" if not args.no_teacher
          else f"{name} ({family})")
    print(f"input: {args.batch} x {args.seconds:g} s ({int(round(args.seconds * profiling.SAMPLE_RATE))} samples) "
          f"float32 noise, {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          + (f"time: median of {args.repeats} after {args.warmup} warm-up" if args.repeats
             else "time: not measured (--repeats 0), so the timing rows are left out"))
    print(precision_line(precision, args.plain, None if args.no_teacher else teacher_precision))
    if args.no_teacher:
        _print_single(profiles[0])
    else:
        print(format_comparison(profiles[0], profiles[1]))
    print("FLOPs: torch FlopCounterMode, plus torch's own formulas for the CPU kernels it misses "
          "(fused attention, oneDNN convolution); MACs = FLOPs / 2")
    for profile in profiles:
        if profile.fused_attention_flops:
            print(f"  {profile.name}: {profile.fused_attention_flops / 1e9:.2f} GFLOP in fused attention "
                  f"({(profile.flops - profile.fused_attention_flops) / 1e9:.2f} GFLOP without it, "
                  "as plain FlopCounterMode reports on CPU)")
    if profiles[0].memory_method:
        print(f"memory: {profiles[0].memory_method}")
    return 0


FLOPS_COUNTED_ON = "the fp32 model with the plain blocks"


def teacher_target(precision: str) -> profiling.ProfileTarget:
    """HuBERT Base as a profile target: run in ``precision`` (fp32 or bf16), counted in fp32."""
    teacher = profiling.build_hubert_base()
    if precision == "fp32":
        return profiling.ProfileTarget("HuBERT Base", teacher, profiling.teacher_forward(teacher),
                                       profiling.TEACHER_HEAD_PREFIXES)
    # A second build (same seed, same weights): S3PRL's weight-normed conv cannot be deep-copied.
    fast = profiling.build_hubert_base().to(torch.bfloat16)
    return profiling.ProfileTarget("HuBERT Base", fast, profiling.teacher_forward(fast, torch.bfloat16),
                                   profiling.TEACHER_HEAD_PREFIXES, counted_model=teacher,
                                   counted_forward=profiling.teacher_forward(teacher))


def precision_line(precision: str, plain: bool, teacher_precision: str | None) -> str:
    """One line saying what ran in which precision and what the FLOPs were counted on."""
    blocks = "plain blocks (--plain)" if plain else "fast blocks (optimize_for_inference)"
    line = f"dtype: {precision}; student: {precision}, {blocks}"
    if teacher_precision == "bf16":
        line += "; teacher: bf16 copy of the same weights"
    elif teacher_precision is not None:
        line += "; teacher: fp32" + (" (int8 applies to our students' Linear layers only)" if precision == "int8" else "")
    return line + f"; params and FLOPs counted on {FLOPS_COUNTED_ON}"


def _print_single(profile: profiling.ModelProfile) -> None:
    print(f"params (total)          {profile.params.total / 1e6:.2f}M")
    print(f"params (without heads)  {profile.params.without_heads / 1e6:.2f}M")
    print(f"GFLOPs / forward        {profile.flops / 1e9:.2f}")
    print(f"GMACs / forward         {profile.macs / 1e9:.2f}")
    if profile.times:
        print(f"wall time / forward (s) {profile.median_time:.3f}")
        print(f"real-time factor        {profile.real_time_factor:.4f}")
        print(f"achieved GFLOP/s        {profile.gflops_per_second:.1f}")
    if profile.peak_memory_bytes is not None:
        print(f"peak memory (MiB)       {profile.peak_memory_bytes / 2**20:.1f}")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "-"


def format_comparison(student: profiling.ModelProfile, teacher: profiling.ModelProfile) -> str:
    """A side-by-side table of two profiles with student/teacher ratios."""
    rows: list[tuple[str, str, str, str]] = [
        ("params (total)", f"{student.params.total / 1e6:.2f}M", f"{teacher.params.total / 1e6:.2f}M",
         _ratio(student.params.total, teacher.params.total)),
        ("params (without heads)", f"{student.params.without_heads / 1e6:.2f}M",
         f"{teacher.params.without_heads / 1e6:.2f}M",
         _ratio(student.params.without_heads, teacher.params.without_heads)),
        ("GFLOPs / forward", f"{student.flops / 1e9:.2f}", f"{teacher.flops / 1e9:.2f}",
         _ratio(student.flops, teacher.flops)),
        ("GMACs / forward", f"{student.macs / 1e9:.2f}", f"{teacher.macs / 1e9:.2f}",
         _ratio(student.macs, teacher.macs)),
    ]
    if student.times and teacher.times:
        rows += [
            ("wall time / forward (s)", f"{student.median_time:.3f}", f"{teacher.median_time:.3f}",
             _ratio(student.median_time, teacher.median_time)),
            ("real-time factor", f"{student.real_time_factor:.4f}", f"{teacher.real_time_factor:.4f}",
             _ratio(student.real_time_factor, teacher.real_time_factor)),
            ("achieved GFLOP/s", f"{student.gflops_per_second:.1f}", f"{teacher.gflops_per_second:.1f}",
             _ratio(student.gflops_per_second, teacher.gflops_per_second)),
        ]
    if student.peak_memory_bytes is not None and teacher.peak_memory_bytes is not None:
        rows.append(("peak memory (MiB)", f"{student.peak_memory_bytes / 2**20:.1f}",
                     f"{teacher.peak_memory_bytes / 2**20:.1f}",
                     _ratio(student.peak_memory_bytes, teacher.peak_memory_bytes)))
    header = ("", student.name, teacher.name, "student/teacher")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = ["  ".join([header[0].ljust(widths[0])] + [h.rjust(w) for h, w in zip(header[1:], widths[1:])])]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]) for row in rows]
    if student.times and teacher.times:
        lines.append(f"speed-up vs teacher: {teacher.median_time / student.median_time:.2f}x "
                     f"(FLOP bound {teacher.flops / student.flops:.2f}x)")
    return "\n".join(lines)
