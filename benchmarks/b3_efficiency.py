"""B3: achieved GFLOP/s of student inference as a fraction of this machine's fp32 matmul peak.

  python benchmarks/b3_efficiency.py            # armhubert, 10 s, batch 1 and 4, 2 threads
  python benchmarks/b3_efficiency.py --quick    # smoke test
  python benchmarks/b3_efficiency.py --plain    # the plain student blocks

Peak: the best of big square fp32 matmuls (``torch.mm``, n = 2048 and 3072) at the same
thread count, measured by this script in the same rounds as the models (a peak sample
between model runs), so machine load affects both alike; the peak is the median over
rounds of each round's best square-matmul rate. Achieved: FlopCounterMode FLOPs of one
forward / median wall time. HuBERT Base is shown for context. The analytic bound is 100%
(the matmul peak). Target: >= 65% at batch 1 and 4 for the student, which runs as
``optimize_for_inference(model)`` (fp32 fast blocks) unless ``--plain``.
"""

from __future__ import annotations

import sys

import common

from recycle_distill.students.build import build_student
from recycle_distill.lab.profiling import count_flops

TARGET = 0.65
SQUARE_SIZES = (2048, 3072)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=7)
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length (default 10)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    parser.add_argument("--preset", default="armhubert", help="student preset (default armhubert)")
    parser.add_argument("--no-teacher", action="store_true", help="skip HuBERT Base")
    common.add_plain_option(parser)
    args = parser.parse_args(argv)
    sizes = SQUARE_SIZES
    if args.quick:
        args.seconds, args.repeats, args.warmup, sizes = 1.0, 1, 0, (512,)
    common.setup(args.threads)
    info = common.print_header("B3 efficiency: achieved GFLOP/s vs fp32 matmul peak",
                               {"preset": args.preset, "seconds": args.seconds, "batches": args.batches,
                                "repeats": args.repeats, "square matmuls": list(sizes), "dtype": "float32",
                                "student blocks": "plain" if args.plain else "optimize_for_inference"})
    student = common.for_inference(build_student(args.preset), args.plain)
    teacher = None if args.no_teacher else common.build_teacher()
    forward_teacher = None if teacher is None else common.profiling.teacher_forward(teacher)

    results = {"machine": info, "seconds": args.seconds, "batches": {}}
    rows = []
    peaks_all: list[float] = []
    for batch in args.batches:
        x = common.waves(batch, args.seconds)
        flops = {args.preset: count_flops(lambda: student(x))}
        forwards = {args.preset: lambda: student(x)}
        if forward_teacher is not None:
            flops["HuBERT Base"] = count_flops(lambda: forward_teacher(x))
            forwards["HuBERT Base"] = lambda: forward_teacher(x)
        peaks: list[float] = []
        # The peak is sampled as one more "model" of each round; warm-up samples come first.
        forwards["matmul peak"] = lambda: peaks.append(max(common.matmul_gflops(n) for n in sizes))
        timed = common.time_rounds(forwards, args.repeats, args.warmup)
        del peaks[: len(peaks) - args.repeats]
        peak = common.median(peaks)
        peaks_all += peaks
        per_batch = {"peak_gflops": peak, "peak_samples": list(peaks)}
        for name in flops:
            achieved = flops[name] / common.median(timed[name]) / 1e9
            fraction = achieved / peak
            note = f"target >= {TARGET:.0%}: {common.verdict(fraction, TARGET)}" if name == args.preset else "(context)"
            rows.append([batch, name, f"{flops[name] / 1e9:.1f}", f"{common.median(timed[name]):.3f}",
                         f"{achieved:.1f}", f"{peak:.1f}", f"{fraction:.0%}", "100%", note])
            per_batch[name] = {"flops": flops[name], "times_s": timed[name], "gflops": achieved, "fraction": fraction}
        results["batches"][str(batch)] = per_batch
    print()
    print(common.table(["batch", "model", "GFLOP", "time (s)", "GFLOP/s", "peak GFLOP/s", "fraction", "bound", ""], rows))
    print(f"\npeak samples (GFLOP/s, best square matmul per round): {', '.join(f'{p:.0f}' for p in peaks_all)}")
    common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
