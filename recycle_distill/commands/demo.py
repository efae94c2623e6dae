"""Offline end-to-end demo on a tiny synthetic corpus (a few minutes on 2 CPU cores).

Builds a tiny speech corpus (espeak-ng voices as speakers), a small random HuBERT teacher in
fairseq's checkpoint layout, distils a student from it, exports it, loads it back through
torch.hub and S3PRL, trains S3PRL's SID downstream on the corpus speakers, and writes
<out>/report.md and <out>/loss.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models import FAMILIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--steps", type=int, default=60, help="distillation steps (default 60)")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="armhubert", help="student family")
    parser.add_argument("--sid-steps", type=int, default=60, help="SID downstream training steps (default 60)")
    parser.add_argument("--speakers", type=int, default=6, help="corpus speakers (default 6)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from ..compat import apply_compat

    apply_compat()
    from ..demo import DemoOptions, run_demo
    from ..demo.pipeline import DemoError

    options = DemoOptions(out=args.out, steps=args.steps, family=args.family, sid_steps=args.sid_steps,
                          speakers=args.speakers, seed=args.seed)
    try:
        run_demo(options)
    except DemoError as err:
        print(f"\nDEMO FAILED: {err}")
        return 1
    print(f"\nreport: {args.out / 'report.md'}   curve: {args.out / 'loss.png'}")
    return 0
