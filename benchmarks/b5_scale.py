"""B5: time and peak memory vs utterance length, student vs HuBERT Base (batch 1).

  python benchmarks/b5_scale.py            # 1, 5, 10, 30, 60 s; armhubert; 2 threads
  python benchmarks/b5_scale.py --quick    # smoke test
  python benchmarks/b5_scale.py --plain    # the plain student blocks
  python benchmarks/b5_scale.py --long     # also 120 s and 600 s (one timed forward each; ~15 min in all)
  python benchmarks/b5_scale.py --long --stored-maps   # the fast blocks never go map-free

For each length, the student and the teacher are timed alternately (median of the
rounds) and their peak memory is measured once (torch profiler allocator events: peak live
tensor bytes above the pre-forward level). Growth columns are relative to the shortest
length; the analytic column is the FLOP growth (FlopCounterMode), i.e. what the time
growth would be at constant GFLOP/s. Attention is quadratic in length: ARMHuBERT's reuse
layers read the (H, T, T) maps of the full layers before them. The fast blocks keep those maps
up to ``MAP_FREE_FROM_BYTES`` (64 MiB, ~24 s at batch 1) and past it hand on queries and keys
instead, from which the reuse layer recomputes the map block by block (memory linear in T;
``--stored-maps`` turns that off to show the stored maps' cost). The student runs as
``optimize_for_inference(model)`` (fp32 fast blocks) unless ``--plain`` (the plain blocks
always store the maps). A model whose forward cannot allocate its memory at some length is
reported as out of memory there instead of stopping the run.
"""

from __future__ import annotations

import os
import resource
import sys
import time

import common
import torch

from recycle_distill.inference.blocks import attention
from recycle_distill.students.build import build_student
from recycle_distill.lab.profiling import count_flops, peak_memory

LENGTHS = (1.0, 5.0, 10.0, 30.0, 60.0)
LONG_LENGTHS = LENGTHS + (120.0, 600.0)
# Past this length one forward takes minutes: it is timed once (the forward that checks it fits
# is the timed one), and its FLOPs and peak memory come from one more forward that counts both.
ONE_ROUND_FROM = 60.0
OUT_OF_MEMORY_MESSAGES = ("allocate", "could not create a primitive", "out of memory")


def limit_address_space(fraction: float) -> int:
    """Cap this process's address space at what it has mapped now plus ``fraction`` of the RAM.

    A model that needs more then fails to allocate (reported as out of memory) instead of
    having the kernel's OOM killer end the whole run: S3PRL's HuBERT Base at 120 s took all
    24 GB of this machine and was killed. Returns the cap in bytes.
    """
    cap = address_space() + int(fraction * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    return cap


def address_space() -> int:
    """Bytes this process has mapped now (/proc/self/statm)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def fits(name: str, forward, x, measured: dict[str, list[dict]], seconds: float) -> float | None:
    """Run ``forward(x)`` once and return its wall time; if it cannot allocate its memory, record that
    and return None."""
    try:
        with torch.inference_mode():  # as the timed rounds run (autograd would store every map)
            start = time.perf_counter()
            forward(x)
            return time.perf_counter() - start
    except (MemoryError, RuntimeError) as err:
        # torch's allocator says "can't allocate"; oneDNN, short of memory for its scratch space,
        # "could not create a primitive".
        if not isinstance(err, MemoryError) and not any(m in str(err) for m in OUT_OF_MEMORY_MESSAGES):
            raise
        print(f"{name} at {seconds:g} s: out of memory ({str(err).splitlines()[0][:120]})")
        measured[name].append({"seconds": seconds, "out_of_memory": str(err).splitlines()[0][:300]})
        return None


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--seconds", type=float, nargs="+", default=list(LENGTHS), help="lengths (default 1 5 10 30 60)")
    parser.add_argument("--preset", default="armhubert", help="student preset (default armhubert)")
    parser.add_argument("--long", action="store_true", help="lengths 1 5 10 30 60 120 600")
    parser.add_argument("--stored-maps", action="store_true", help="the fast blocks keep every attention map")
    parser.add_argument("--memory-fraction", type=float, default=0.75,
                        help="cap the address space at what is mapped plus this fraction of the RAM (default 0.75; 0: no cap)")
    common.add_plain_option(parser)
    args = parser.parse_args(argv)
    if args.long:
        args.seconds = list(LONG_LENGTHS)
    if args.stored_maps:
        attention.MAP_FREE_FROM_BYTES = float("inf")
    if args.quick:
        args.seconds, args.repeats, args.warmup = [1.0, 2.0], 1, 0
    common.setup(args.threads)
    info = common.print_header("B5 scale: cost vs utterance length (batch 1)",
                               {"preset": args.preset, "seconds": args.seconds, "repeats": args.repeats,
                                "warmup": args.warmup, "dtype": "float32",
                                "student blocks": "plain" if args.plain else "optimize_for_inference",
                                "reuse maps": "stored" if args.plain or args.stored_maps else
                                f"recomputed past {attention.MAP_FREE_FROM_BYTES / 2**20:g} MiB"})
    student = common.for_inference(build_student(args.preset), args.plain)
    teacher = common.build_teacher()
    if args.memory_fraction > 0:
        print(f"address space capped at {limit_address_space(args.memory_fraction) / 2**30:.1f} GiB "
              "(an allocation past it is reported as out of memory)")
    forward_teacher = common.profiling.teacher_forward(teacher)
    models = {args.preset: lambda x: student(x), "HuBERT Base": lambda x: forward_teacher(x)}

    measured: dict[str, list[dict]] = {name: [] for name in models}
    for seconds in args.seconds:
        x = common.waves(1, seconds)
        first = {name: fits(name, forward, x, measured, seconds) for name, forward in models.items()}
        runnable = {name: forward for name, forward in models.items() if first[name] is not None}
        if seconds > ONE_ROUND_FROM:
            times = {name: [first[name]] for name in runnable}
        else:
            times = common.time_rounds({name: (lambda f=f: f(x)) for name, f in runnable.items()}, args.repeats,
                                       args.warmup)
        for name, forward in runnable.items():
            flops: list[int] = []
            if seconds > ONE_ROUND_FROM:  # one forward for both: each takes minutes here
                memory = peak_memory(lambda: flops.append(count_flops(lambda: forward(x))))
            else:
                memory = peak_memory(lambda: forward(x))
                flops.append(count_flops(lambda: forward(x)))
            measured[name].append({
                "seconds": seconds, "flops": flops[0], "times_s": times[name],
                "time_s": common.median(times[name]), "peak_memory_bytes": memory.peak_bytes,
            })
            print(f"{name} at {seconds:g} s: {common.median(times[name]):.3f} s, "
                  f"{memory.peak_bytes / 2**20 if memory.peak_bytes else float('nan'):.0f} MiB; process "
                  f"{address_space() / 2**30:.1f} GiB mapped", flush=True)

    rows = []
    for name, entries in measured.items():
        ran = [entry for entry in entries if "out_of_memory" not in entry]
        rows += [[name, f"{entry['seconds']:g}", "out of memory"] + [""] * 6 for entry in entries if entry not in ran]
        if not ran:
            continue
        base = ran[0]
        for entry in ran:
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
         if "out_of_memory" not in s and "out_of_memory" not in t else
         [f"{s['seconds']:g}", "out of memory: " + ("student" if "out_of_memory" in s else "teacher"), "", ""]
         for s, t in zip(student_entries, teacher_entries)],
    ))
    common.write_json(args.json, {"machine": info, "results": measured})
    return 0


if __name__ == "__main__":
    sys.exit(main())
