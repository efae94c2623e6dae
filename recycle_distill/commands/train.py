"""Distil a student from a teacher.

  recycle-distill train -c conf.yaml [section.key=value ...]
  recycle-distill train -c armhubert-960 teacher.teacher_model=hubert_base_ls960.pt data.libri_root=/db/LibriSpeech
  torchrun --nproc_per_node 2 -m recycle_distill.train -c conf.yaml      # several GPUs / nodes

-c takes a YAML file (ours or a reference recipe, unchanged) or a shipped recipe name.
Resume with train.checkpoint=last (or a path); the run ends by exporting
<output_dir>/student.safetensors, which the S3PRL upstreams and torch.hub load directly.
"""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from ..train.config import config_help, list_recipes, load_train_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True,
                        help=f"training YAML, or a shipped recipe: {', '.join(list_recipes())}")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override config keys")
    parser.add_argument("--check", action="store_true", help="validate the config and data, then stop")
    parser.epilog = config_help()


def run(args: argparse.Namespace) -> int:
    try:
        config = load_train_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from ..compat import apply_compat

    apply_compat()  # the teacher is S3PRL's model code
    from ..train.trainer import Trainer

    trainer = Trainer(config)
    if args.check:
        print(f"config OK: {config.family} ({config.objective}), {len(trainer.train_set)} training utterances, "
              f"{trainer.total_steps} steps")
        return 0
    summary = trainer.fit()
    if trainer.dist.is_main:
        print(f"done: {summary['steps']} steps, last loss {summary['last_loss']:.5f}, exported {summary['export']}")
    trainer.dist.shutdown()
    return 0
