#!/usr/bin/env python3
"""How much does batching change a short utterance's features? (the first CNN block's GroupNorm)

The first conv block normalises each channel over the whole (padded) time axis, so a short
utterance padded to a long one's length is normalised with the padding's zeros. This prints the
relative L2 change ||batched - alone|| / ||alone|| of a 1 s utterance's features (CNN output and
last hidden state, its own frames only) when it is batched with a 30 s one, for every preset
with random weights and for the tiny test fixtures' weights, and the same with
``per_utterance_cnn=True`` (which must be 0).

    python tools/measure_batched_groupnorm.py [--short 1] [--long 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recycle_distill import build_student, list_presets  # noqa: E402
from recycle_distill.students.blocks.masks import pad_waveforms  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "fixtures"


def relative_change(model, short: torch.Tensor, long: torch.Tensor) -> tuple[float, float]:
    """(CNN features, last hidden state) relative L2 change of ``short`` batched vs alone."""
    with torch.no_grad():
        alone = model(short[None], torch.tensor([len(short)]))
        batch, lengths = pad_waveforms([short, long])
        together = model(batch, lengths)
    frames = alone.features.shape[1]
    out = []
    for a, b in ((alone.features[0], together.features[0, :frames]),
                 (alone.last_hidden_state[0], together.last_hidden_state[0, :frames])):
        out.append(float((b - a).norm() / a.norm()))
    return out[0], out[1]


def models(seed: int):
    """(name, builder(per_utterance_cnn) -> model) for the presets and the tiny fixtures."""
    for name in list_presets():
        def build(per_utterance, name=name):
            torch.manual_seed(seed)
            return build_student(name, per_utterance_cnn=per_utterance)
        yield f"{name} (random weights)", build
    for path in sorted(FIXTURES.glob("golden_tiny_*.pt")):
        fixture = torch.load(path, weights_only=True)
        family = path.stem.replace("golden_tiny_", "")

        def build(per_utterance, fixture=fixture, family=family):
            model = build_student({"distiller": fixture["config"]}, family, per_utterance_cnn=per_utterance)
            model.load_state_dict(fixture["state_dict"])
            return model
        yield f"tiny {family} (fixture weights)", build


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", type=float, default=1.0, help="seconds of the short utterance")
    parser.add_argument("--long", type=float, default=30.0, help="seconds of the long utterance")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    generator = torch.Generator().manual_seed(args.seed)
    short = torch.randn(int(args.short * 16000), generator=generator) * 0.1
    long = torch.randn(int(args.long * 16000), generator=generator) * 0.1
    print(f"{args.short:g} s utterance batched with a {args.long:g} s one (Gaussian noise, std 0.1), "
          "relative L2 change vs alone")
    print("| model | CNN features | last hidden state | last hidden state, per_utterance_cnn |")
    print("|---|---|---|---|")
    for name, build in models(args.seed):
        cnn, last = relative_change(build(False).eval(), short, long)
        _, exact = relative_change(build(True).eval(), short, long)
        print(f"| {name} | {cnn:.1%} | {last:.1%} | {exact:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
