"""B8: ARMHuBERT through the hub entry, ``dtype="bf16"`` vs ``dtype="fp32"`` (issue 9, must-show 2).

  python benchmarks/b8_hub_bf16.py            # 10 s, batch 1 and 4, 2 threads, 7 rounds
  python benchmarks/b8_hub_bf16.py --quick    # smoke test

Both upstreams come from ``torch.hub.load(<this checkout>, "armhubert", source="local",
ckpt=<one compact file>, dtype=...)``, so they hold identical weights (the ARMHuBERT preset,
random, seed 0) and run exactly what a user gets: the fast blocks, bf16 conversion, and
float32 hidden states out. They are called the way S3PRL calls an upstream (a list of 1-D
waveforms, no autograd), alternated round by round. Target: bf16 >= 2.0x fp32 at batch 1
and 4. Bound: the bf16/fp32 ``torch.mm`` peak ratio measured right after each batch's rounds.
"""

from __future__ import annotations

import os
import sys
import tempfile

import common
import torch

from recycle_distill.lab.analysis.precision_error import layer_errors, worst_layer
from recycle_distill.students.build import build_student
from recycle_distill.checkpoint import save_compact

TARGET = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=7)
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length (default 10)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats, args.warmup, args.batches = 1.0, 1, 0, [1]
    common.setup(args.threads)
    info = common.print_header("B8 hub entry: ARMHuBERT dtype=bf16 vs dtype=fp32",
                               {"seconds": args.seconds, "batches": args.batches, "repeats": args.repeats,
                                "warmup": args.warmup, "entry": "armhubert (torch.hub, source=local)"})
    torch.manual_seed(0)
    model = build_student("armhubert")
    results: dict = {"machine": info, "batches": {}}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "armhubert.safetensors")
        save_compact(path, model.state_dict(), "armhubert", model.config.to_dict())
        upstreams = {dtype: torch.hub.load(common.ROOT, "armhubert", source="local", ckpt=path, dtype=dtype)
                     for dtype in ("fp32", "bf16")}
    rows = []
    for batch in args.batches:
        wavs = list(common.waves(batch, args.seconds).unbind(0))
        with torch.inference_mode():
            reference = upstreams["fp32"](wavs)["hidden_states"]
            got = upstreams["bf16"](wavs)["hidden_states"]
            error = worst_layer(layer_errors(reference, got)).relative_l2
            assert {h.dtype for h in got} == {torch.float32}
            forwards = {dtype: (lambda u=upstream: u(wavs)) for dtype, upstream in upstreams.items()}
            times = common.time_rounds(forwards, args.repeats, args.warmup)
            peaks = {dtype: common.matmul_gflops(2048, 3, dtype) for dtype in ("fp32", "bf16")}
        speedup = common.paired_ratio(times["fp32"], times["bf16"])
        peak_ratio = peaks["bf16"] / peaks["fp32"]
        verdict = common.verdict(speedup, TARGET)
        rows.append([batch, f"{common.median(times['fp32']):.3f}", f"{common.median(times['bf16']):.3f}",
                     f"{speedup:.2f}x", f"{peak_ratio:.2f}x", f"{error:.1e}", verdict])
        results["batches"][batch] = {"fp32_s": times["fp32"], "bf16_s": times["bf16"], "speedup": speedup,
                                     "bound": peak_ratio, "peaks_gflops": peaks, "worst_layer_rel_l2": error}
    print(common.table(["batch", "fp32 (s)", "bf16 (s)", "bf16 speed-up", "bound (peak ratio)",
                        "worst-layer rel. L2", f"target >= {TARGET}x"], rows))
    common.write_json(args.json, results)
    return 0  # a missed target is reported in the table, not an error


if __name__ == "__main__":
    sys.exit(main())
