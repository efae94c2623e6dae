"""Offline end-to-end demo on a tiny espeak-ng corpus: what distillation achieves (CPU only; the
report states how long the run took and on what machine).

Builds a tiny speech corpus (espeak-ng voices as speakers) and a keyword set, a small HuBERT
teacher in fairseq's checkpoint layout given brief masked-prediction pretraining, distils a
student from it, exports it, loads it back through torch.hub and S3PRL, measures how much of the
teacher's layers the student carries (CKA, cosine) and compares fbank, random-init student,
distilled student and teacher on one keyword-spotting probe; writes <out>/report.md,
<out>/loss.png and <out>/transfer.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recycle_distill.students import FAMILIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--steps", type=int, default=200, help="distillation steps (default 200)")
    parser.add_argument("--teacher-steps", type=int, default=250,
                        help="teacher pretraining steps; 0 keeps a random teacher (default 250)")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="armhubert", help="student family")
    parser.add_argument("--probe-steps", type=int, default=200, help="downstream probe training steps (default 200)")
    parser.add_argument("--speakers", type=int, default=6, help="corpus speakers per subset (default 6)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from recycle_distill.s3prl.compat import apply_compat

    apply_compat()
    from recycle_distill.lab.demo import DemoOptions, run_demo
    from recycle_distill.lab.demo.pipeline import DemoError

    for name in ("steps", "probe_steps", "speakers"):
        if getattr(args, name) < 1:
            print(f"demo: --{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.teacher_steps < 0:
        print(f"demo: --teacher-steps must be 0 or more, got {args.teacher_steps}", file=sys.stderr)
        return 2
    options = DemoOptions(out=args.out, steps=args.steps, family=args.family, teacher_steps=args.teacher_steps,
                          probe_steps=args.probe_steps, speakers=args.speakers, seed=args.seed)
    try:
        run_demo(options)
    except DemoError as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    print(f"\nreport: {args.out / 'report.md'}   figures: {args.out / 'loss.png'}, {args.out / 'transfer.png'}")
    return 0
