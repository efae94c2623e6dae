"""Shared set-up for the benchmarks: threads, machine description, models, interleaved timing.

Every benchmark measures the models it compares in ONE process, alternating them round by
round (A, B, A, B, ...) after a warm-up, and reports medians: on a shared machine the
load of other processes then falls on all of them alike. Ratios are medians of the
per-round ratios (each round's two timings were taken back to back).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

# The CUDA build of torch logs an error from its profiler back end on GPU-less machines.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as `python benchmarks/bN_*.py` from a checkout
    sys.path.insert(0, ROOT)

from recycle_distill.lab import profiling  # noqa: E402
from recycle_distill.lab.machine import cpu_model, machine  # noqa: E402,F401  (re-exported for the benchmarks)

SAMPLE_RATE = profiling.SAMPLE_RATE


def base_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """Options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke test for CI")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds (default {repeats})")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    return parser


def setup(threads: int) -> None:
    """Fix the thread count and silence library logging; fp32 everywhere."""
    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float32)
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("s3prl").setLevel(logging.WARNING)


def print_header(title: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    info = machine()
    print(f"== {title}")
    print(f"machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']}, {info['threads']} threads; "
          f"1-min load at start {info['load_1min_at_start']}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return info


def time_rounds(
    forwards: Mapping[str, Callable[[], Any]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Wall seconds per call, the callables alternated round by round (see module docstring)."""
    return profiling.time_interleaved(forwards, repeats=repeats, warmup=warmup)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of numerator[r] / denominator[r]."""
    return median([a / b for a, b in zip(numerator, denominator)])


def build_teacher() -> torch.nn.Module:
    """HuBERT Base from S3PRL's model code, random weights."""
    return profiling.build_hubert_base(seed=0)


def waves(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    return profiling.make_waveforms(batch, seconds, seed)


MATMUL_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}


def matmul_gflops(size: int, repeats: int = 3, dtype: str = "fp32") -> float:
    """Best GFLOP/s (int8: GOP/s) of a (size x size) @ (size x size) matmul over ``repeats`` calls.

    ``dtype``: ``fp32`` or ``bf16`` (``torch.mm``: MKL for fp32, oneDNN for bf16), ``int8``
    (``torch._int_mm``, int8 in, int32 out: what a VNNI int8 Linear can reach at best), or
    ``fp32-onednn``: the same fp32 product as a 1x1 oneDNN convolution on channels-last memory
    (on AMD CPUs MKL's sgemm can run well below what oneDNN's fp32 kernels reach). NaN where
    this torch lacks the kernel.
    """
    if dtype == "fp32-onednn":
        if not (hasattr(torch.ops.aten, "mkldnn_convolution") and torch.backends.mkldnn.is_available()):
            return float("nan")
        x = torch.randn(1, size, 1, size).contiguous(memory_format=torch.channels_last)
        w = torch.randn(size, size, 1, 1).contiguous(memory_format=torch.channels_last)

        def run() -> None:
            torch.ops.aten.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1)
    elif dtype == "int8":
        a = torch.randint(-64, 64, (size, size), dtype=torch.int8)
        b = torch.randint(-64, 64, (size, size), dtype=torch.int8)

        def run() -> None:
            torch._int_mm(a, b)
    else:
        a = torch.randn(size, size, dtype=MATMUL_DTYPES[dtype])
        b = torch.randn(size, size, dtype=MATMUL_DTYPES[dtype])
        out = torch.empty(size, size, dtype=MATMUL_DTYPES[dtype])

        def run() -> None:
            torch.mm(a, b, out=out)
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def add_plain_option(parser: argparse.ArgumentParser) -> None:
    """``--plain``: time the students' plain blocks instead of ``optimize_for_inference``'s."""
    parser.add_argument("--plain", action="store_true",
                        help="time the plain student blocks (default: optimize_for_inference(model), fp32 fast blocks)")


def for_inference(model: torch.nn.Module, plain: bool = False) -> torch.nn.Module:
    """What the benchmarks time: ``optimize_for_inference(model)`` (fp32, fast CPU blocks), as the
    hub entries and the S3PRL upstream run students; with ``plain`` the model as built."""
    if plain:
        return model
    from recycle_distill.inference import optimize_for_inference

    return optimize_for_inference(model)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
        if index == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def write_json(path: Optional[str], payload: Mapping[str, Any]) -> None:
    if path:
        with open(path, "w") as handle:
            json.dump(payload, handle, indent=1)
        print(f"wrote {path}")


def verdict(value: float, target: float) -> str:
    return "met" if value >= target else f"NOT met (gap {target / value:.2f}x)"
