"""B5: time and peak memory vs utterance length, student vs HuBERT Base (batch 1).

  python benchmarks/b5_scale.py            # 1, 5, 10, 30, 60 s; armhubert; 2 threads
  python benchmarks/b5_scale.py --quick    # smoke test
  python benchmarks/b5_scale.py --plain    # the plain student blocks

For each length, the student and the teacher are timed alternately (median of the
rounds) and their peak memory is measured once (torch profiler allocator events: peak live
tensor bytes above the pre-forward level). Growth columns are relative to the shortest
length; the analytic column is the FLOP growth (FlopCounterMode), i.e. what the time
growth would be at constant GFLOP/s. Attention is quadratic in length: ARMHuBERT keeps
(H, T, T) maps for its reuse layers, HuBERT Base runs a fused attention kernel that never
stores them, so the student's memory grows faster at long lengths. The student runs as
``optimize_for_inference(model)`` (fp32 fast blocks) unless ``--plain``.
"""

from __future__ import annotations

import sys

import common

from recycle_distill.students.build import build_student
from recycle_distill.lab.profiling import count_flops, peak_memory

LENGTHS = (1.0, 5.0, 10.0, 30.0, 60.0)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--seconds", type=float, nargs="+", default=list(LENGTHS), help="lengths (default 1 5 10 30 60)")
    parser.add_argument("--preset", default="armhubert", help="student preset (default armhubert)")
    common.add_plain_option(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats, args.warmup = [1.0, 2.0], 1, 0
    common.setup(args.threads)
    info = common.print_header("B5 scale: cost vs utterance length (batch 1)",
                               {"preset": args.preset, "seconds": args.seconds, "repeats": args.repeats,
                                "warmup": args.warmup, "dtype": "float32",
                                "student blocks": "plain" if args.plain else "optimize_for_inference"})
    student = common.for_inference(build_student(args.preset), args.plain)
    teacher = common.build_teacher()
    forward_teacher = common.profiling.teacher_forward(teacher)
    models = {args.preset: lambda x: student(x), "HuBERT Base": lambda x: forward_teacher(x)}

    measured: dict[str, list[dict]] = {name: [] for name in models}
    for seconds in args.seconds:
        x = common.waves(1, seconds)
        times = common.time_rounds({name: (lambda f=f: f(x)) for name, f in models.items()}, args.repeats, args.warmup)
        for name, forward in models.items():
            memory = peak_memory(lambda: forward(x))
            measured[name].append({
                "seconds": seconds, "flops": count_flops(lambda: forward(x)), "times_s": times[name],
                "time_s": common.median(times[name]), "peak_memory_bytes": memory.peak_bytes,
            })

    rows = []
    for name, entries in measured.items():
        base = entries[0]
        for entry in entries:
            memory = entry["peak_memory_bytes"]
            rows.append([
                name, f"{entry['seconds']:g}", f"{entry['time_s']:.3f}", f"{entry['time_s'] / entry['seconds']:.4f}",
                f"{entry['time_s'] / base['time_s']:.1f}x", f"{entry['flops'] / base['flops']:.1f}x",
                f"{entry['flops'] / 1e9:.0f}",
                "n/a" if memory is None else f"{memory / 2**20:.0f}",
                "n/a" if memory is None or not base["peak_memory_bytes"] else f"{memory / base['peak_memory_bytes']:.1f}x",
            ])
    print()
    print(common.table(["model", "length (s)", "time (s)", "RTF", "time growth", "FLOP growth", "GFLOP",
                        "peak MiB", "memory growth"], rows))
    student_entries, teacher_entries = measured[args.preset], measured["HuBERT Base"]
    print("\nstudent / teacher by length:")
    print(common.table(
        ["length (s)", "time ratio", "FLOP ratio", "memory ratio"],
        [[f"{s['seconds']:g}", f"{s['time_s'] / t['time_s']:.3f}", f"{s['flops'] / t['flops']:.3f}",
          "n/a" if not s["peak_memory_bytes"] or not t["peak_memory_bytes"]
          else f"{s['peak_memory_bytes'] / t['peak_memory_bytes']:.2f}"]
         for s, t in zip(student_entries, teacher_entries)],
    ))
    common.write_json(args.json, {"machine": info, "results": measured})
    return 0


if __name__ == "__main__":
    sys.exit(main())
