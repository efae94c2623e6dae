"""B1: inference speed of every student preset vs HuBERT Base, same input, batch 1 and 4.

  python benchmarks/b1_inference.py            # 10 s fp32 noise, 2 threads, 5 rounds
  python benchmarks/b1_inference.py --quick    # smoke test
  python benchmarks/b1_inference.py --plain    # the plain student blocks

Per batch size, one interleaved series: each round runs the teacher, then every preset,
so every student/teacher ratio comes from timings taken back to back (median of the
per-round ratios). The analytic bound next to each measured speed-up is the FLOP ratio
teacher/student (FlopCounterMode, CPU attention counted): what the student would gain if
both ran at the same GFLOP/s. Target: ARMHuBERT >= 3.0x at batch 1 and 4.

Students run as users get them: ``optimize_for_inference(model)`` (fp32, the CPU fast
blocks), as the hub entries and the S3PRL upstream apply it; ``--plain`` times the plain blocks.
"""

from __future__ import annotations

import sys

import common

from recycle_distill.students.build import build_student, list_presets
from recycle_distill.lab.profiling import count_flops, count_parameters, STUDENT_HEAD_PREFIXES

TARGET_PRESET = "armhubert"
TARGET = 3.0


def unique_presets() -> list[tuple[str, str]]:
    """(preset, same-architecture-as) for every preset; identical architectures are timed once."""
    seen: dict[str, str] = {}
    out = []
    for name in list_presets():
        model = build_student(name)
        key = f"{model.family}:{model.config.to_dict()}"
        out.append((name, seen.get(key, "")))
        seen.setdefault(key, name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length (default 10)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    parser.add_argument("--presets", nargs="+", default=None, help="presets to time (default: all)")
    common.add_plain_option(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats, args.warmup = 1.0, 1, 0
        args.presets = args.presets or [TARGET_PRESET]
    common.setup(args.threads)
    info = common.print_header("B1 inference: student presets vs HuBERT Base",
                               {"seconds": args.seconds, "batches": args.batches, "repeats": args.repeats,
                                "warmup": args.warmup, "dtype": "float32",
                                "student blocks": "plain" if args.plain else "optimize_for_inference"})

    presets = [(n, same) for n, same in unique_presets() if args.presets is None or n in args.presets]
    students = {name: common.for_inference(build_student(name), args.plain) for name, same in presets if not same}
    teacher = common.build_teacher()
    forward_teacher = common.profiling.teacher_forward(teacher)

    results = {"machine": info, "seconds": args.seconds, "batches": {}}
    target_ok = True
    for batch in args.batches:
        x = common.waves(batch, args.seconds)
        flops = {"HuBERT Base": count_flops(lambda: forward_teacher(x))}
        for name, model in students.items():
            flops[name] = count_flops(lambda model=model: model(x))
        forwards = {"HuBERT Base": lambda: forward_teacher(x)}
        forwards.update({name: (lambda model=model: model(x)) for name, model in students.items()})
        times = common.time_rounds(forwards, args.repeats, args.warmup)

        rows, per_batch = [], {}
        teacher_times = times["HuBERT Base"]
        rows.append(["HuBERT Base", f"{count_parameters(teacher).total / 1e6:.2f}M", f"{flops['HuBERT Base'] / 1e9:.1f}",
                     f"{common.median(teacher_times):.3f}", f"{common.median(teacher_times) / (batch * args.seconds):.4f}",
                     "1.00x", "1.00x", ""])
        for name, same in presets:
            if same:
                rows.append([name, "", "", "", "", "", "", f"same architecture as {same}"])
                continue
            speedup = common.paired_ratio(teacher_times, times[name])
            bound = flops["HuBERT Base"] / flops[name]
            params = count_parameters(students[name], STUDENT_HEAD_PREFIXES).total
            note = ""
            if name == TARGET_PRESET:
                note = f"target >= {TARGET:.1f}x: {common.verdict(speedup, TARGET)}"
                target_ok &= speedup >= TARGET
            rows.append([name, f"{params / 1e6:.2f}M", f"{flops[name] / 1e9:.1f}", f"{common.median(times[name]):.3f}",
                         f"{common.median(times[name]) / (batch * args.seconds):.4f}", f"{speedup:.2f}x", f"{bound:.2f}x", note])
            per_batch[name] = {"flops": flops[name], "times_s": times[name], "speedup": speedup, "flop_bound": bound}
        per_batch["HuBERT Base"] = {"flops": flops["HuBERT Base"], "times_s": teacher_times}
        results["batches"][str(batch)] = per_batch
        print(f"\nbatch {batch} x {args.seconds:g} s")
        print(common.table(["model", "params", "GFLOP", "time (s)", "RTF", "speed-up", "FLOP bound", ""], rows))
    common.write_json(args.json, results)
    if not args.quick:
        print(f"\n{TARGET_PRESET} >= {TARGET:.1f}x at every batch size: {'met' if target_ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
