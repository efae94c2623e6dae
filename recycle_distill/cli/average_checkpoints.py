"""Average the checkpoints of one S3PRL experiment (the last N, or N named files).

  recycle-distill average-checkpoints result/downstream/NAME --last 10 -o result/downstream/NAME/average-last10.ckpt
  recycle-distill average-checkpoints NAME/states-8000.ckpt NAME/states-9000.ckpt NAME/states-10000.ckpt -o avg.ckpt

Float weights of Featurizer, Downstream (and Upstream when it trained) are averaged; Args,
Config, Step and the rest come from the newest input; the inputs are recorded in the output.
Checkpoints of different experiments are refused, naming the file and the key that differs.
The result evaluates (``recycle-distill superb -m evaluate -e avg.ckpt -t test``) and
transcribes like any checkpoint. Semantics: :mod:`recycle_distill.recognizer.average`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recycle_distill.recognizer.average import AverageError, average_checkpoints, last_checkpoints
from recycle_distill.util.messages import plain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="CKPT_OR_EXPDIR",
                        help="the checkpoints to average, or one experiment folder with --last N")
    parser.add_argument("--last", type=int, default=None, metavar="N",
                        help="average the N states-<step>.ckpt of the folder with the highest steps")
    parser.add_argument("-o", "--output", required=True,
                        help="the averaged checkpoint (never an input, never named states-<step>.ckpt)")
    parser.add_argument("--force", action="store_true", help="replace an earlier averaged checkpoint at --output")


def _inputs(args: argparse.Namespace) -> list[Path]:
    folders = [path for path in args.inputs if Path(path).is_dir()]
    if args.last is not None:
        if len(args.inputs) != 1 or not folders:
            raise AverageError("--last N takes one experiment folder")
        return last_checkpoints(args.inputs[0], args.last)
    if folders:
        raise AverageError(f"{plain(folders[0])}: a folder; add --last N to average its last N checkpoints")
    return [Path(path) for path in args.inputs]


def run(args: argparse.Namespace) -> int:
    record = average_checkpoints(_inputs(args), args.output, force=args.force)
    steps = ", ".join(str(item["step"]) for item in record)
    print(f"averaged {len(record)} checkpoints (steps {steps}) -> {args.output}; "
          f"Args, Config and Step from {record[-1]['file']}")
    return 0
