"""The bf16 attention phase of the students, every formulation torch offers, against the bf16 matmul peak.

  python benchmarks/attention_variants.py            # 10 s, ARMHuBERT's and STaRHuBERT's heads, batch 1 and 4
  python benchmarks/attention_variants.py --quick    # smoke test
  python benchmarks/attention_variants.py --no-compile   # leave out the torch.compile rows (they need a C++ compiler)

One layer's softmax(q k^T) v at T = 499 frames (10 s), in bfloat16 without autograd, as the bf16
fast blocks run it (``recycle_distill.inference.blocks.attention._blocked_attention``) and as
each alternative would: torch's fused CPU kernel through ``F.scaled_dot_product_attention``
(flash and math back ends), blocks of 1, 2, 4 or all heads as plain matmul-softmax-matmul code
(the shipped blocks take 4 heads at this size in bf16, 2 before), the head dimension zero-padded to a multiple of 16 or
32 (40 -> 48 or 64, 54 -> 64), ``torch.compile`` of the softmax alone and of the whole
block, and ``flex_attention`` compiled (torch's CPU template). The rows of one shape are
interleaved round by round with a 2048^3 bf16 ``torch.mm`` peak sample; GFLOP/s counts the two
matmuls (4 B H T^2 d); each round starts with an unreported call, since the row that follows the
peak sample measured slow whatever it ran. The phase split then times the two matmuls and the softmax of the
shipped block size alone: with the products at 700-800 GFLOP/s, the softmax over the T x T
scores (bf16 in and out, float32 inside) is what holds the phase down.

Each row is checked against float64 attention on the same inputs (relative L2 error).
"""

from __future__ import annotations

import sys
from typing import Callable

import common
import torch
import torch.nn.functional as F

from recycle_distill.inference.blocks import attention

# (name, heads, head dim): the students' attention shapes.
SHAPES = (("armhubert", 12, 40), ("starhubert", 8, 54))


def fresh_blocks(q, k, v, heads_per_block: int):
    """Blocks of ``heads_per_block`` heads, every temporary freshly allocated."""
    batch, heads, _, _ = q.shape
    out = torch.empty_like(v)
    for b in range(batch):
        for h in range(0, heads, heads_per_block):
            block = slice(h, h + heads_per_block)
            probs = torch.softmax(q[b, block] @ k[b, block].transpose(-1, -2), dim=-1)
            torch.matmul(probs, v[b, block], out=out[b, block])
    return out


def padded(q, k, v, multiple: int):
    """The head dimension zero-padded to a multiple of ``multiple`` (scores unchanged), then the shipped blocks."""
    pad = (0, -q.shape[-1] % multiple)
    return attention._blocked_attention(F.pad(q, pad), F.pad(k, pad), F.pad(v, pad), None)[..., : q.shape[-1]]


def sdpa(backend):
    from torch.nn.attention import sdpa_kernel

    def run(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, scale=1.0)
    return run


def compiled_variants() -> dict[str, Callable]:
    """torch.compile rows (inductor's C++ back end); each built lazily, a failure reported as such."""
    softmax = torch.compile(lambda x: torch.softmax(x, dim=-1), dynamic=False)

    def compiled_softmax(q, k, v):
        out = torch.empty_like(v)
        for b, heads, rows in attention._blocks(q.shape[0], q.shape[1], q.shape[2], 2):
            probs = softmax(q[b, heads, rows] @ k[b, heads].transpose(-1, -2))
            torch.matmul(probs, v[b, heads], out=out[b, heads, rows])
        return out

    whole = torch.compile(lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v, dynamic=False)
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    return {
        "torch.compile(softmax) in the blocks": compiled_softmax,
        "torch.compile(whole attention)": whole,
        "flex_attention (compiled)": lambda q, k, v: flex(q, k, v, scale=1.0),
    }


def values_and_ones(v):
    """(B, H, T, d) -> (B, H, T, d + 1) ``[v | 1]``: a product with it also gives the row sums."""
    return torch.cat([v, torch.ones(v.shape[:-1] + (1,), dtype=v.dtype)], dim=-1)


def exp_blocks(q, k, v):
    """The shipped blocks with the softmax replaced by one exp pass without the row maximum
    (safe only for small scores, as here) and the normalisation through [v | 1]: not shipped."""
    out = torch.empty_like(v)
    ones = values_and_ones(v)
    for b, heads, rows in attention._blocks(q.shape[0], q.shape[1], q.shape[2], 2):
        weighted = (q[b, heads, rows] @ k[b, heads].transpose(-1, -2)).exp_() @ ones[b, heads]
        torch.div(weighted[..., :-1], weighted[..., -1:], out=out[b, heads, rows])
    return out


def reuse_exp(probs, v):
    """softmax(P) v as exp(P) [v | 1] (probabilities need no shift): not shipped."""
    out = torch.empty_like(v)
    ones = values_and_ones(v)
    for b, heads, rows in attention._blocks(probs.shape[0], probs.shape[1], probs.shape[2], probs.element_size()):
        weighted = torch.exp(probs[b, heads, rows]) @ ones[b, heads]
        torch.div(weighted[..., :-1], weighted[..., -1:], out=out[b, heads, rows])
    return out


# The reuse layer's softmax(P) v: one product, so its GFLOP/s counts 2 B H T^2 d.
REUSE_ROWS = {
    "reuse layer: softmax(P) v (shipped)": lambda p, v: attention.FastReusedAttention.attend(None, p, v, None),
    "reuse layer: exp(P) [v | 1]": reuse_exp,
}


def variants(with_compile: bool) -> dict[str, Callable]:
    from torch.nn.attention import SDPBackend

    rows = {
        "fast blocks (shipped: 4 heads, fresh)": lambda q, k, v: attention._blocked_attention(q, k, v, None),
        "exp without shift, [v | 1]": exp_blocks,
        "1 head per block, fresh temporaries": lambda q, k, v: fresh_blocks(q, k, v, 1),
        "2 heads per block, fresh (before)": lambda q, k, v: fresh_blocks(q, k, v, 2),
        "4 heads per block, fresh": lambda q, k, v: fresh_blocks(q, k, v, 4),
        "all heads at once, fresh": lambda q, k, v: fresh_blocks(q, k, v, q.shape[1]),
        "head dim padded to a multiple of 16": lambda q, k, v: padded(q, k, v, 16),
        "head dim padded to a multiple of 32": lambda q, k, v: padded(q, k, v, 32),
        "SDPA, flash back end": sdpa(SDPBackend.FLASH_ATTENTION),
        "SDPA, math back end": sdpa(SDPBackend.MATH),
    }
    if with_compile:
        rows.update(compiled_variants())
    return rows


def relative_error(out: torch.Tensor, q, k, v) -> float:
    want = torch.softmax(q.double() @ k.double().transpose(-1, -2), dim=-1) @ v.double()
    return ((out.double() - want).norm() / want.norm()).item()


def measure(batch: int, heads: int, head_dim: int, time: int, rows: dict[str, Callable], args) -> dict:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, time, head_dim, generator=generator).to(torch.bfloat16) for _ in range(3))
    q = q * head_dim**-0.5  # scaled queries, as the blocks receive them
    bound = float((torch.linalg.vector_norm(q.float(), dim=-1).amax(-1) * torch.linalg.vector_norm(k.float(), dim=-1).amax(-1)).max())
    probs = torch.softmax(q.float() @ k.float().transpose(-1, -2), dim=-1).to(torch.bfloat16)  # a map to reuse
    want_reuse = torch.softmax(probs.double(), dim=-1) @ v.double()
    flops = 4 * batch * heads * time * time * head_dim
    # Each round starts with an unreported call: the row right after a round's 2048^3 peak matmul
    # measured up to ~35% slow, whatever it ran (caches and the core's state after the big product).
    runnable: dict = {"(warm-up, not reported)": lambda: attention._blocked_attention(q, k, v, None)}
    errors, failed = {}, {}
    with torch.inference_mode():
        for name, run in rows.items():
            try:
                errors[name] = relative_error(run(q, k, v), q, k, v)
                runnable[name] = lambda run=run: run(q, k, v)
            except Exception as err:  # a back end this torch cannot build here: reported, not fatal
                failed[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:60]}" if str(err).strip() else type(err).__name__
        for name, run in REUSE_ROWS.items():
            out = run(probs, v).double()
            errors[name] = ((out - want_reuse).norm() / want_reuse.norm()).item()
            runnable[name] = lambda run=run: run(probs, v)
        runnable["bf16 matmul peak (2048^3)"] = lambda: common.matmul_gflops(2048, repeats=1, dtype="bf16")
        times = common.time_rounds(runnable, repeats=args.repeats, warmup=args.warmup)
        peaks = [common.matmul_gflops(2048, repeats=2, dtype="bf16") for _ in range(max(1, args.repeats // 2))]
    peak = common.median(peaks)
    table = []
    for name in [*rows, *REUSE_ROWS]:
        if name in failed:
            table.append([name, "-", "-", "-", "-", failed[name]])
            continue
        seconds = common.median(times[name])
        gflops = (flops // 2 if name in REUSE_ROWS else flops) / seconds / 1e9
        table.append([name, f"{1e3 * seconds:.2f}", f"{gflops:.0f}", f"{100 * gflops / peak:.0f}%",
                      f"{errors[name]:.1e}", ""])
    split = phase_split(q, k, v, args)
    return {"batch": batch, "heads": heads, "head_dim": head_dim, "time": time, "gflop": flops / 1e9,
            "largest_query_norm_times_key_norm": bound,
            "bf16_peak_gflops": peak, "rows": table, "split": split}


def phase_split(q, k, v, args) -> dict[str, float]:
    """The shipped block size's scores matmul, softmax and value matmul timed alone (ms per layer)."""
    batch, heads, time, head_dim = q.shape
    blocks = attention._blocks(batch, heads, time, 2)
    scores = [q[b, h, r] @ k[b, h].transpose(-1, -2) for b, h, r in blocks]
    probs = [torch.softmax(s, dim=-1) for s in scores]
    exps = [torch.empty_like(s) for s in scores]

    def products() -> None:
        for b, h, r in blocks:
            torch.matmul(q[b, h, r], k[b, h].transpose(-1, -2), out=scores[0][: h.stop - h.start, : r.stop - r.start])

    def softmax() -> None:
        for s in scores:
            torch.softmax(s, dim=-1, out=s)

    def exp() -> None:
        for s, e in zip(scores, exps):
            torch.exp(s, out=e)

    def values() -> None:
        for (b, h, r), p in zip(blocks, probs):
            torch.matmul(p, v[b, h])

    with torch.inference_mode():
        times = common.time_rounds({"scores": products, "softmax": softmax, "exp": exp, "values": values},
                                   repeats=args.repeats, warmup=args.warmup)
    half = 2 * batch * heads * time * time * head_dim
    out = {name: 1e3 * common.median(t) for name, t in times.items()}
    out["scores_gflops"] = half / (out["scores"] / 1e3) / 1e9
    out["values_gflops"] = half / (out["values"] / 1e3) / 1e9
    out["softmax_gelem_per_s"] = batch * heads * time * time / (out["softmax"] / 1e3) / 1e9
    out["exp_gelem_per_s"] = batch * heads * time * time / (out["exp"] / 1e3) / 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=9)
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    args = parser.parse_args(argv)
    common.setup(args.threads)
    time, batches = (499, (1, 4)) if not args.quick else (49, (1,))
    if args.quick:
        args.repeats, args.warmup = 1, 0
    info = common.print_header("attention variants (bf16, one layer, no autograd)",
                               {"frames": time, "batches": batches, "rounds": args.repeats, "threads": args.threads})
    rows = variants(with_compile=not args.no_compile)
    results = []
    for batch in batches:
        for model, heads, head_dim in SHAPES:
            result = measure(batch, heads, head_dim, time, rows, args)
            results.append({"model": model, **result})
            print(f"\n{model}: batch {batch}, {heads} heads x {head_dim}, T = {time}; {result['gflop']:.2f} GFLOP; "
                  f"bf16 matmul peak {result['bf16_peak_gflops']:.0f} GFLOP/s; largest |q| x |k| "
                  f"{result['largest_query_norm_times_key_norm']:.1f} (the shift-free exp needs it below ~80)")
            print(common.table(["variant", "ms", "GFLOP/s", "of peak", "rel. error", "note"], result["rows"]))
            split = result["split"]
            total = split["scores"] + split["softmax"] + split["values"]
            print(f"phase split of the shipped blocks (alone): scores {split['scores']:.2f} ms "
                  f"({split['scores_gflops']:.0f} GFLOP/s), softmax {split['softmax']:.2f} ms "
                  f"({split['softmax_gelem_per_s']:.2f} G elements/s, {100 * split['softmax'] / total:.0f}% of the three), "
                  f"values {split['values']:.2f} ms ({split['values_gflops']:.0f} GFLOP/s); the exp pass instead of the "
                  f"softmax {split['exp']:.2f} ms ({split['exp_gelem_per_s']:.2f} G elements/s)")
    common.write_json(args.json, {"machine": info, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
