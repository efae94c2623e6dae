"""B7: our loop-free CIF vs the frame loop the original runs (vectorised over batch and channels).

  python benchmarks/b7_cif.py            # B = 16, T = 500, C = 256, float32, 2 threads
  python benchmarks/b7_cif.py --quick    # smoke test

Both run the training-mode CIF (weights scaled to the target lengths) on the same inputs, in
float32 as the original does, alternated round by round; the outputs are compared in the same
run. "forward" is one call; "forward+backward" adds the backward of a weighted sum of the
outputs (gradients to ``hidden`` and ``alpha``). Goal: >= 5x forward+backward. A per-operator
profile of our forward+backward names the operation that bounds it.
"""

from __future__ import annotations

import sys

import torch

import common
from cif_frame_loop import cif_frame_loop

from recycle_distill.downstreams.cif_asr.cif import continuous_integrate_and_fire

GOAL = 5.0


def make_inputs(batch: int, frames: int, channels: int, seed: int = 0):
    """Encoder-like inputs: lengths from 60% to 100% of T, weights averaging ~0.3 (one firing per ~3 frames)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(0.6 * frames, frames, batch).round().long()
    pad = torch.arange(frames).unsqueeze(0) >= lengths.unsqueeze(1)
    alpha = torch.sigmoid(torch.randn(batch, frames, generator=gen) - 1.0).masked_fill(pad, 0.0)
    hidden = torch.randn(batch, frames, channels, generator=gen)
    targets = (alpha.sum(1) * 1.1).round().long().clamp_min(1)
    return hidden, alpha, pad, targets


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--channels", type=int, default=256)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.frames, args.channels, args.repeats, args.warmup = 2, 40, 8, 1, 0
    common.setup(args.threads)
    info = common.print_header("B7 CIF: loop-free vs frame loop",
                               {"B": args.batch, "T": args.frames, "C": args.channels,
                                "repeats": args.repeats, "dtype": "float32"})
    hidden, alpha, pad, targets = make_inputs(args.batch, args.frames, args.channels)

    def ours():
        return continuous_integrate_and_fire(hidden_g, alpha_g, pad, targets).fired

    def loop():
        return cif_frame_loop(hidden_g, alpha_g, pad, targets)[0]

    hidden_g, alpha_g = hidden.clone().requires_grad_(), alpha.clone().requires_grad_()
    out_ours, out_loop = ours(), loop()
    max_diff = (out_ours - out_loop).abs().max().item()
    print(f"outputs: {tuple(out_ours.shape)}, max |ours - loop| = {max_diff:.2e}")

    def with_backward(fn):
        def run():
            # The shared timer runs under inference_mode; training needs autograd back.
            with torch.inference_mode(False), torch.enable_grad():
                hidden_g.grad = alpha_g.grad = None
                out = fn()
                (out * out.detach()).sum().backward()
        return run

    with torch.no_grad():
        forward = common.time_rounds({"ours": ours, "loop": loop}, args.repeats, args.warmup)
    backward = common.time_rounds({"ours": with_backward(ours), "loop": with_backward(loop)}, args.repeats, args.warmup)

    rows, results = [], {"machine": info, "max_abs_diff": max_diff}
    for name, timed in (("forward", forward), ("forward+backward", backward)):
        ratio = common.paired_ratio(timed["loop"], timed["ours"])
        results[name] = {"ours_ms": 1e3 * common.median(timed["ours"]), "loop_ms": 1e3 * common.median(timed["loop"]),
                         "speedup": ratio}
        rows.append([name, f"{results[name]['ours_ms']:.2f}", f"{results[name]['loop_ms']:.1f}", f"{ratio:.1f}x"])
    print(common.table(["pass", "ours ms", "frame loop ms", "speed-up"], rows))
    print(f"goal >= {GOAL:.0f}x forward+backward: {common.verdict(results['forward+backward']['speedup'], GOAL)}")

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3 if not args.quick else 1):
            with_backward(ours)()
    top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print("our forward+backward, top operators by self CPU time:")
    print(common.table(["op", "share"], [[e.key, f"{100 * e.self_cpu_time_total / total:.0f}%"] for e in top]))
    results["top_ops"] = {e.key: e.self_cpu_time_total / total for e in top}
    common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
