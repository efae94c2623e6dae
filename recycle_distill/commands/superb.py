"""Run S3PRL's run_downstream.py with the recycle-distill upstreams registered.

  recycle-distill superb -m train -n sid_arm -u armhubert -d voxceleb1 -k ARMHuBERT-960h.ckpt \\
      -o "config.downstream_expert.datarc.file_path=/data/VoxCeleb1"
  recycle-distill superb -m evaluate -e result/downstream/sid_arm/dev-best.ckpt

Every option is S3PRL's run_downstream.py option and reaches it unchanged. Without -c, our
tweaked SUPERB config for -d is used (-d ctc needs -c: ctc_libriphone.yaml for PR, ctc_snips.yaml
for SF); without --device, cpu when no GPU is present. Stdout is appended to
<expdir>/superb.log (--no-log: not). Same as: python -m recycle_distill.superb ...
"""

from __future__ import annotations

import argparse
from typing import Sequence

PASS_THROUGH = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("options", nargs=argparse.REMAINDER,
                        help="run_downstream.py options (-m, -u, -d, -k, -g, -c, -o, -e, -n/-p, -f, ...) and --no-log")


def run_argv(argv: Sequence[str]) -> int:
    """Hand ``argv`` to the launcher; returns run_downstream's exit status."""
    from ..superb.launcher import main

    return main(list(argv))


def run(args: argparse.Namespace) -> int:
    return run_argv(args.options)
