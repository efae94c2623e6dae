"""Train a few SUPERB tasks for a few steps on a make-data folder and print one table.

  recycle-distill make-data tiny_data
  recycle-distill superb-smoke -u armhubert -k my_student.ckpt --data tiny_data
  recycle-distill superb-smoke -u maskhubert -k ckpt.pt -g config.yaml --data tiny_data --tasks KS ASR --steps 8

Each task (KS: speech_commands, SID: voxceleb1, ASR: asr) runs S3PRL's run_downstream
through the launcher of `recycle-distill superb`, with the shipped config and overrides that
make it tiny (a few steps, small heads, one dev evaluation at the end), in its own process.
The table says, per task: the steps trained, the training loss at the first and last step,
the dev metric, the wall time, and ok or why it failed (one line). The expdirs are kept under
--out (new, empty or an earlier smoke run, which is replaced as a whole); exit status 1 when a
task failed. PR is not offered: the PyPI s3prl lacks its corpus code and lexicons.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASK_NAMES = ("KS", "SID", "ASR")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-u", "--upstream", required=True, help="S3PRL upstream name (armhubert, maskhubert_local, fbank ...)")
    parser.add_argument("-k", "--upstream_ckpt", default=None, help="the upstream's checkpoint (run_downstream -k)")
    parser.add_argument("-g", "--upstream_model_config", default=None, help="its model config (run_downstream -g)")
    parser.add_argument("--data", required=True, type=Path, help="a folder written by recycle-distill make-data")
    parser.add_argument("--out", type=Path, default=Path("superb_smoke"), help="expdirs and the table (default superb_smoke)")
    parser.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES), metavar="TASK",
                        help=f"which tasks ({', '.join(TASK_NAMES)}; default: all)")
    parser.add_argument("--steps", type=_positive(int), default=4, help="training steps per task (default 4)")
    parser.add_argument("--timeout", type=_positive(float), default=600.0, help="seconds per task (default 600)")
    parser.add_argument("--device", default=None, help="run_downstream --device (default: cuda when present, else cpu)")


def run(args: argparse.Namespace) -> int:
    from recycle_distill.lab.smoke import format_table, run_smoke

    upstream = ["-u", args.upstream]
    if args.upstream_ckpt:
        upstream += ["-k", args.upstream_ckpt]
    if args.upstream_model_config:
        upstream += ["-g", args.upstream_model_config]
    print(f"superb-smoke: {', '.join(args.tasks)} for {args.steps} steps each on {args.data}, upstream "
          f"{' '.join(upstream[1:])}; expdirs under {args.out}", flush=True)
    rows = run_smoke(upstream, args.data, args.out, tasks=args.tasks, steps=args.steps, timeout=args.timeout,
                     device=args.device)
    print(format_table(rows))
    failed = [row.task for row in rows if not row.ok]
    if failed:
        print(f"superb-smoke: {len(failed)} of {len(rows)} failed ({', '.join(failed)}); logs in {args.out}/<task>/",
              file=sys.stderr)
        return 1
    return 0
