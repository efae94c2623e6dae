"""B6: every inference format of the students vs HuBERT Base, one process, interleaved rounds.

  python benchmarks/b6_formats.py                # 10 s, batch 1 and 4, 2 threads, 5 rounds
  python benchmarks/b6_formats.py --quick        # smoke test (1 s, batch 1, 2-layer students)
  python benchmarks/b6_formats.py --json PATH    # also every timing, peak sample and split

Rows: HuBERT Base (S3PRL's ``HubertModel`` as S3PRL's upstream calls it) in fp32 and in bf16
(a bf16 copy of the same weights, input cast); the ARMHuBERT and STaRHuBERT presets (random
weights, the same in every format) as ``optimize_for_inference(model, dtype)`` in fp32 (our
fast blocks), bf16 and int8 (torch dynamic quantization of every Linear, where this torch has
it), and through ONNX Runtime in fp32 and int8 (exported once into a temporary folder with
``export_onnx``; ORT threads = torch threads).

Each batch size is one interleaved series: every round runs every row plus one sample of each
2048^3 matmul peak (fp32 and bf16 ``torch.mm``, int8 ``torch._int_mm``, and for context fp32
through oneDNN, which on this AMD CPU runs about twice as fast as the MKL sgemm behind
``torch.mm``), so machine load falls on all alike; times and peaks are medians, speed-ups
medians of per-round ratios. FLOPs are counted once per model (batch 1, ``FlopCounterMode``
with ``recycle_distill.lab.profiling``'s formulas, times the batch size) on its fp32 model, so
GFLOP/s is "fp32-equivalent work per second". Fraction of peak: against the bf16 ``torch.mm``
peak for bf16 rows, the fp32 ``torch.mm`` peak for the others (the peaks B3 and the issue use).
Error: the worst layer's relative L2 error ||h - h_fp32|| / ||h_fp32|| over ``hidden_states``
against the model's own fp32 row (our fp32 for students, HuBERT fp32 for HuBERT bf16), on the
timed input (noise).

Goals (measured figure, analytic bound, and where missed the gap and the limiting phase from
the time split, see ``format_split.py``):
  1. best student format >= 3.0x our fp32;   2. ARMHuBERT bf16 >= 3.0x HuBERT Base bf16;
  3. ARMHuBERT's best format >= 12x HuBERT Base fp32;   4. bf16 students >= 50% of the bf16 peak;
  5. the attention phase of the bf16 students >= 50% of the bf16 peak (its FLOPs over its time in the
     split, scaled to the timed median; the split of the bf16 student rows also runs at every batch).
A format's best time is its FLOPs at its matmul peaks (bf16: all at the bf16 peak; int8: the
Linear FLOPs at the int8 peak (``torch._int_mm``), torch int8's bf16 CNN at the bf16 peak, the
rest at fp32; fp32: the fp32 peak).
Each speed-up goal prints a bound, the ratio of the two sides' best times (the speed-up at equal
efficiency, as B1's FLOP ratio), and a ceiling, the slower side's measured time over the faster
side's best time (what 100% of the peak would give); the peak fraction's bound is 100%.
The split runs at the first batch size (``--no-split`` skips it).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import common
import format_split
import torch

from recycle_distill.lab import profiling
from recycle_distill.lab.analysis.precision_error import relative_l2_error
from recycle_distill.students.build import build_student

PRESETS = ("armhubert", "starhubert")
TARGET_PRESET = "armhubert"
FORMATS = ("fp32", "bf16", "int8", "ort-fp32", "ort-int8")
PEAK_SIZE = 2048
# --quick: 2-layer students (the CNN and layer shapes of the presets), so exports take ~1 s.
QUICK_OVERRIDES = {"armhubert": {"encoder_layers": 2, "reuse_pattern": "[True, False]"},
                   "starhubert": {"encoder_layers": 2}}
GOAL_FORMAT_SPEEDUP, GOAL_BF16_VS_TEACHER, GOAL_VS_TEACHER_FP32, GOAL_BF16_PEAK = 3.0, 3.0, 12.0, 0.5
GOAL_ATTENTION_PEAK = 0.5
TEACHER = "HuBERT Base"


@dataclass
class Row:
    """One model in one format: how to run it on (B, S) float32 waves, and its hidden states."""

    model: str
    fmt: str
    run: Optional[Callable[[torch.Tensor], Any]] = None
    hidden: Optional[Callable[[torch.Tensor], list[torch.Tensor]]] = None
    split: Optional[Callable[[torch.Tensor], dict[str, float]]] = None
    skipped: str = ""
    module: Optional[torch.nn.Module] = None  # the torch model (fp32 rows: FLOPs are counted on it)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} {self.fmt}"

    @property
    def peak_kind(self) -> str:
        return "bf16" if self.fmt == "bf16" else "fp32"


def teacher_rows() -> list[Row]:
    """HuBERT Base fp32 and a bf16 copy of the same weights (S3PRL's weight norm blocks deepcopy)."""
    rows = []
    for fmt, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = common.build_teacher().to(dtype)
        run = profiling.teacher_forward(model, dtype)  # the call S3PRL's HuBERT upstream makes
        rows.append(Row(TEACHER, fmt, run, _teacher_hidden(model, run),
                        lambda x, model=model, run=run: format_split.torch_time_split(model, lambda: run(x)),
                        module=model))
    return rows


def _teacher_hidden(model: torch.nn.Module, run: Callable) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """What S3PRL's HuBERT expert exposes: each layer's input (B, T, D) and the encoder output."""

    def hidden(x: torch.Tensor) -> list[torch.Tensor]:
        states: list[torch.Tensor] = []
        handles = [layer.register_forward_pre_hook(lambda m, args: states.append(args[0].transpose(0, 1).float()))
                   for layer in model.encoder.layers]
        handles.append(model.encoder.register_forward_hook(lambda m, args, out: states.append(out[0].float())))
        try:
            run(x)
        finally:
            for handle in handles:
                handle.remove()
        return states

    return hidden


def student_rows(preset: str, quick: bool, folder: str) -> list[Row]:
    """Every format of one preset, all from one set of random weights."""
    from recycle_distill.inference import optimize_for_inference, torch_int8_available

    torch.manual_seed(0)
    plain = build_student(preset, **(QUICK_OVERRIDES[preset] if quick else {}))
    rows = []
    for fmt in ("fp32", "bf16", "int8"):
        if fmt == "int8":
            available, why = torch_int8_available()
            if not available:
                rows.append(Row(preset, fmt, skipped=why))
                continue
        model = optimize_for_inference(plain, fmt)
        rows.append(Row(preset, fmt, lambda x, m=model: m(x),
                        lambda x, m=model: [h.float() for h in m(x).hidden_states],
                        lambda x, m=model: format_split.torch_time_split(m, lambda: m(x)), module=model))
    rows += onnx_rows(preset, plain, folder)
    return rows


def onnx_rows(preset: str, plain: torch.nn.Module, folder: str) -> list[Row]:
    """ONNX Runtime fp32 and int8 of ``plain`` (each row says why where it cannot run)."""
    rows = []
    for dtype in ("fp32", "int8"):
        fmt = f"ort-{dtype}"
        try:
            from recycle_distill.inference.onnx_export import export_onnx
            from recycle_distill.inference.onnx_runtime import OnnxStudentUpstream

            info = export_onnx(plain, f"{folder}/{preset}-{dtype}.onnx", family=plain.family, dtype=dtype)
            upstream = OnnxStudentUpstream(info["path"], plain.family, threads=torch.get_num_threads())
        except Exception as err:  # noqa: BLE001 - any missing piece becomes the row's reason
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            rows.append(Row(preset, fmt, skipped=f"not available: {reason}"))
            continue

        def split(x: torch.Tensor, path: str = info["path"]) -> dict[str, float]:
            feeds = {"waveforms": x.numpy(), "lengths": torch.full((x.shape[0],), x.shape[1], dtype=torch.long).numpy()}
            return format_split.ort_time_split(path, feeds, torch.get_num_threads())

        rows.append(Row(preset, fmt, lambda x, u=upstream: u(list(x)),
                        lambda x, u=upstream: u(list(x))["hidden_states"], split,
                        extra={"export_seconds": info["seconds"], "bytes": info["bytes"]}))
    return rows


def worst_relative_error(states: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """max over layers of ||a - b|| / ||b|| (whole-tensor L2 norms; see recycle_distill.lab.analysis.precision_error)."""
    if len(states) != len(reference):
        raise ValueError(f"{len(states)} hidden states against {len(reference)} in the fp32 reference")
    return max(relative_l2_error(b, a) for a, b in zip(states, reference))


def phase_peaks(fmt: str, peaks: dict[str, float]) -> dict[str, float]:
    """The matmul peak each phase of ``fmt`` can reach at best.

    bf16: everything at the bf16 peak. int8 quantizes the Linears (int8 peak); torch's int8
    format also runs the CNN in bf16 (``optimize_for_inference``), ONNX Runtime's keeps it in
    fp32. The rest, and every phase of the fp32 formats, at the fp32 peak.
    """
    out = dict.fromkeys(format_split.PHASES, peaks["bf16" if fmt == "bf16" else "fp32"])
    if fmt.endswith("int8"):
        out["Linear"] = peaks["int8"]
    if fmt == "int8":
        out["CNN"] = peaks["bf16"]
    return out


def best_time_at_peak(flops: dict[str, int], fmt: str, peaks: dict[str, float]) -> float:
    """Seconds one forward would take with each phase at its peak (:func:`phase_peaks`)."""
    at_peak = phase_peaks(fmt, peaks)
    return sum(flops[phase] / (at_peak[phase] * 1e9) for phase in format_split.PHASES)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length (default 10)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS, help="students (default both)")
    parser.add_argument("--no-split", action="store_true", help="skip the CNN/attention/Linear/other time split")
    args = parser.parse_args(argv)
    peak_size = PEAK_SIZE
    if args.quick:
        args.seconds, args.batches, args.repeats, args.warmup, peak_size = 1.0, [1], 1, 0, 256
    common.setup(args.threads)
    info = common.print_header("B6 formats: fp32 / bf16 / int8 / ONNX Runtime, students vs HuBERT Base",
                               {"presets": args.presets, "seconds": args.seconds, "batches": args.batches,
                                "repeats": args.repeats, "warmup": args.warmup, "peak matmul": peak_size,
                                "quick (2-layer students)": args.quick})
    folder = tempfile.TemporaryDirectory(prefix="b6-onnx-")
    rows = teacher_rows()
    for preset in args.presets:
        rows += student_rows(preset, args.quick, folder.name)
    live = [row for row in rows if not row.skipped]
    flops = {}  # model -> phase -> FLOPs of one utterance, counted on its fp32 row
    x1 = common.waves(1, args.seconds)
    for row in live:
        if row.fmt == "fp32":
            flops[row.model] = format_split.flop_split(row.module, lambda row=row: row.run(x1))
    print(f"\nFLOPs of one {args.seconds:g} s utterance (fp32 model; phase shares):")
    print(common.table(["model", "GFLOP", *format_split.PHASES],
                       [[model, f"{sum(f.values()) / 1e9:.1f}",
                         *(f"{f[p] / sum(f.values()):.0%}" for p in format_split.PHASES)] for model, f in flops.items()]))

    results: dict[str, Any] = {"machine": info, "settings": vars(args), "flops": flops, "batches": {},
                               "skipped": {row.label: row.skipped for row in rows if row.skipped}}
    measured: dict[tuple[int, str], dict[str, Any]] = {}
    peaks_by_batch: dict[int, dict[str, float]] = {}
    for batch in args.batches:
        x = common.waves(batch, args.seconds)
        samples: dict[str, list[float]] = {"fp32": [], "fp32-onednn": [], "bf16": [], "int8": []}
        forwards = {row.label: (lambda row=row: row.run(x)) for row in live}
        for kind in samples:
            forwards[f"peak {kind}"] = lambda kind=kind: samples[kind].append(common.matmul_gflops(peak_size, 2, kind))
        times = common.time_rounds(forwards, args.repeats, args.warmup)
        peaks = {kind: statistics.median(values[args.warmup:]) for kind, values in samples.items()}
        peaks_by_batch[batch] = peaks
        with torch.inference_mode():
            references = {row.model: row.hidden(x) for row in live if row.fmt == "fp32"}
            errors = {row.label: worst_relative_error(row.hidden(x), references[row.model])
                      for row in live if row.fmt != "fp32"}
        table_rows, per_batch = [], {"peaks_gflops": peaks, "peak_samples": samples}
        for row in rows:
            if row.skipped:
                table_rows.append([row.model, row.fmt, "", "", "", "", "", "", f"skipped: {row.skipped}"])
                continue
            t = common.median(times[row.label])
            speedup = common.paired_ratio(times[f"{row.model} fp32"], times[row.label])
            vs_teacher = common.paired_ratio(times[f"{TEACHER} fp32"], times[row.label])
            rate = sum(flops[row.model].values()) * batch / t / 1e9
            fraction = rate / peaks[row.peak_kind]
            error = errors.get(row.label)
            entry = {"times_s": times[row.label], "time_s": t, "speedup_vs_fp32": speedup,
                     "speedup_vs_hubert_fp32": vs_teacher, "gflops": rate, "peak_fraction": fraction,
                     "peak": row.peak_kind, "worst_layer_rel_l2": error, **row.extra}
            measured[(batch, row.label)] = entry
            per_batch[row.label] = entry
            table_rows.append([row.model, row.fmt, f"{t:.3f}", f"{speedup:.2f}x", f"{vs_teacher:.2f}x", f"{rate:.0f}",
                               f"{fraction:.0%} of {row.peak_kind}", "(ref)" if error is None else f"{error:.1e}", ""])
        results["batches"][str(batch)] = per_batch
        print(f"\nbatch {batch} x {args.seconds:g} s; matmul peaks (median GFLOP/s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
        print(common.table(["model", "format", "time (s)", "vs own fp32", f"vs {TEACHER} fp32", "GFLOP/s",
                            "of peak", "worst rel L2", ""], table_rows))

    splits: dict[str, dict[str, float]] = {}
    if not args.no_split:
        x = common.waves(args.batches[0], args.seconds)
        for row in live:
            splits[row.label] = row.split(x)
        print(f"\ntime split at batch {args.batches[0]} (ms, share; torch.profiler self CPU time / ORT node kernel "
              "times, median of 3 runs; 'profiled' is their sum, 'timed' the median of the timed rounds)")
        print(common.table(["model", "format", *format_split.PHASES, "profiled", "timed"],
                           [[row.model, row.fmt, *format_split.format_split_row(splits[row.label]),
                             f"{sum(splits[row.label].values()) * 1e3:.0f}",
                             f"{measured[(args.batches[0], row.label)]['time_s'] * 1e3:.0f}"] for row in live]))
        results["split_batch"], results["split_s"] = args.batches[0], splits
        for batch in args.batches[1:]:  # goal 5 at every batch: the bf16 student rows only
            x = common.waves(batch, args.seconds)
            for row in live:
                if row.fmt == "bf16" and row.model != TEACHER:
                    splits[f"{batch}:{row.label}"] = row.split(x)
        results["split_s"] = splits

    results["goals"] = report_goals(rows, args, measured, flops, peaks_by_batch, splits)
    common.write_json(args.json, results)
    folder.cleanup()
    return 0


def report_goals(rows: list[Row], args: Any, measured: dict, flops: dict, peaks_by_batch: dict,
                 splits: dict) -> list[dict]:
    """Print each goal per batch and preset: measured figure, bound, ceiling, gap and limiting phase.

    bound: the speed-up at equal efficiency (both sides at the same fraction of their matmul
    peak, i.e. the ratio of :func:`best_time_at_peak`); ceiling: the slower side as measured,
    the faster one at 100% of its peak. Both use the peaks of the same batch's rounds. The
    limiting phase comes from the split (shares) scaled to the timed median at the split batch.
    """
    goals: list[dict] = []
    split_batch = args.batches[0]

    def add(goal: str, batch: int, label: str, value: float, bound: float, ceiling: float, target: float,
            percent: bool = False) -> None:
        met = value >= target
        why = None
        if not met and label in splits:
            model, fmt = label.rsplit(" ", 1)
            work = {phase: n * split_batch for phase, n in flops[model].items()}
            profiled = sum(splits[label].values())
            timed = measured[(split_batch, label)]["time_s"]
            seconds = {phase: t * timed / profiled for phase, t in splits[label].items()} if profiled else splits[label]
            why = format_split.limiting_phase(seconds, work, phase_peaks(fmt, peaks_by_batch[split_batch]))
        show = (lambda v: f"{v:.0%}") if percent else (lambda v: f"{v:.2f}x")
        goals.append({"goal": goal, "batch": batch, "row": label, "measured": value, "bound": bound,
                      "ceiling": ceiling, "target": target, "met": met, "gap": None if met else target / value,
                      "limiting_phase": why})
        status = "met" if met else f"NOT met, gap {target / value:.2f}x; limiting phase {why or 'n/a (no split)'}"
        limits = f"bound {show(bound)}" + ("" if percent else f", ceiling {show(ceiling)}")
        print(f"  batch {batch}, {label}: {show(value)} ({limits}): {status}")

    def live(preset: str, batch: int) -> list[str]:
        return [r.label for r in rows if r.model == preset and (batch, r.label) in measured]

    def best(preset: str, batch: int, key: str) -> str:
        return max(live(preset, batch), key=lambda label: measured[(batch, label)][key])

    def limits(batch: int, slow: str, fast: str) -> tuple[float, float]:
        """(bound, ceiling) of the speed-up of row ``fast`` over row ``slow`` (labels "model format")."""
        peaks = peaks_by_batch[batch]
        (slow_model, slow_fmt), (fast_model, fast_fmt) = slow.rsplit(" ", 1), fast.rsplit(" ", 1)
        fast_best = best_time_at_peak(flops[fast_model], fast_fmt, peaks) * batch
        return (best_time_at_peak(flops[slow_model], slow_fmt, peaks) * batch / fast_best,
                measured[(batch, slow)]["time_s"] / fast_best)

    print("\ngoals (bound: speed-up at equal efficiency; ceiling: the slower side as measured, the faster at its")
    print(f"matmul peak; limiting phase: most time lost against the peak, from the split at batch {split_batch})")
    print(f"1. best student format >= {GOAL_FORMAT_SPEEDUP:g}x our fp32")
    for batch in args.batches:
        for preset in args.presets:
            if live(preset, batch):
                label = best(preset, batch, "speedup_vs_fp32")
                add("best format vs our fp32", batch, label, measured[(batch, label)]["speedup_vs_fp32"],
                    *limits(batch, f"{preset} fp32", label), GOAL_FORMAT_SPEEDUP)
    arm_bf16, teacher_bf16 = f"{TARGET_PRESET} bf16", f"{TEACHER} bf16"
    print(f"2. {arm_bf16} >= {GOAL_BF16_VS_TEACHER:g}x {teacher_bf16}")
    for batch in args.batches:
        if (batch, arm_bf16) in measured and (batch, teacher_bf16) in measured:
            ratio = common.paired_ratio(measured[(batch, teacher_bf16)]["times_s"],
                                        measured[(batch, arm_bf16)]["times_s"])
            add("ARMHuBERT bf16 vs HuBERT Base bf16", batch, arm_bf16, ratio, *limits(batch, teacher_bf16, arm_bf16),
                GOAL_BF16_VS_TEACHER)
    print(f"3. {TARGET_PRESET}'s best format >= {GOAL_VS_TEACHER_FP32:g}x {TEACHER} fp32 (as S3PRL runs it)")
    for batch in args.batches:
        if live(TARGET_PRESET, batch):
            label = best(TARGET_PRESET, batch, "speedup_vs_hubert_fp32")
            add("ARMHuBERT best format vs HuBERT Base fp32", batch, label,
                measured[(batch, label)]["speedup_vs_hubert_fp32"], *limits(batch, f"{TEACHER} fp32", label),
                GOAL_VS_TEACHER_FP32)
    print(f"4. bf16 student inference >= {GOAL_BF16_PEAK:.0%} of the bf16 matmul peak")
    for batch in args.batches:
        for preset in args.presets:
            if (batch, f"{preset} bf16") in measured:
                add("bf16 fraction of the bf16 peak", batch, f"{preset} bf16",
                    measured[(batch, f"{preset} bf16")]["peak_fraction"], 1.0, 1.0, GOAL_BF16_PEAK, percent=True)
    print(f"5. attention phase of the bf16 students >= {GOAL_ATTENTION_PEAK:.0%} of the bf16 matmul peak")
    for batch in args.batches:
        for preset in args.presets:
            label = f"{preset} bf16"
            split = splits.get(label if batch == split_batch else f"{batch}:{label}")
            if (batch, label) not in measured or not split or not sum(split.values()):
                continue
            # The profiled phase times scaled to the timed median, as for the limiting phase.
            seconds = split["attention"] * measured[(batch, label)]["time_s"] / sum(split.values())
            rate = flops[preset]["attention"] * batch / seconds / 1e9
            fraction = rate / peaks_by_batch[batch]["bf16"]
            met = fraction >= GOAL_ATTENTION_PEAK
            goals.append({"goal": "attention phase of the bf16 students vs the bf16 peak", "batch": batch,
                          "row": label, "measured": fraction, "bound": 1.0, "ceiling": 1.0,
                          "target": GOAL_ATTENTION_PEAK, "met": met, "gap": None if met else GOAL_ATTENTION_PEAK / fraction,
                          "limiting_phase": None, "attention_gflops": rate, "attention_share": split["attention"] / sum(split.values())})
            print(f"  batch {batch}, {label}: attention {fraction:.0%} of the bf16 peak ({rate:.0f} GFLOP/s, "
                  f"{split['attention'] / sum(split.values()):.0%} of the time; bound 100%): "
                  + ("met" if met else f"NOT met, gap {GOAL_ATTENTION_PEAK / fraction:.2f}x; the softmax between the "
                     "two products (benchmarks/attention_variants.py)"))
    return goals


if __name__ == "__main__":
    sys.exit(main())
