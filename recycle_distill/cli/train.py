"""Distil a student from a teacher.

  recycle-distill train -c conf.yaml [section.key=value ...]
  recycle-distill train -c tiny-example          # a whole run in about a minute on a CPU (writes its own data)
  recycle-distill train -c armhubert-960 teacher.teacher_model=hubert_base_ls960.pt data.libri_root=/db/LibriSpeech
  torchrun --nproc_per_node 2 -m recycle_distill train -c conf.yaml      # several GPUs / nodes

-c takes a YAML file (ours or a reference recipe, unchanged) or a shipped recipe name.
Resume with train.checkpoint=last (or a path); Ctrl-C saves a checkpoint at the current step
and prints the command that resumes it. The run ends by exporting <output_dir>/student.safetensors
(with its teacher, data, objective, steps and precision recorded), which the S3PRL upstreams and
torch.hub load directly; <output_dir>/loss.svg plots the training and validation loss.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Optional

from recycle_distill.students.config import ConfigError
from recycle_distill.training.config import config_help, list_examples, list_recipes, load_train_config
from recycle_distill.training.example import is_example, missing_example_files, prepare_example
from recycle_distill.training.run_folder import foreign_entries
from recycle_distill.util.messages import short_repr


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True,
                        help=f"training YAML, a shipped recipe ({', '.join(list_recipes())}) or example run "
                             f"({', '.join(list_examples())})")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override config keys")
    parser.add_argument("--check", action="store_true", help="validate the config and data, then stop (writes nothing)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an output_dir that holds an earlier run: the old run is moved "
                             "aside to <output_dir>.old-N (never deleted); a folder that is not a run is refused")
    parser.epilog = config_help()


def prepare_output_dir(folder: str, resuming: bool, overwrite: bool) -> Optional[str]:
    """Refuse a new run into a folder holding another (unless resuming); with ``overwrite``,
    move the old one aside, but only when it is one of our runs (any other folder is refused
    with what is in it). Returns where it was moved, or None."""
    if not os.path.isdir(folder) or not os.listdir(folder) or resuming:
        return None
    if not overwrite:
        raise ConfigError(
            f"train.output_dir: {folder} already holds a run ({', '.join(sorted(os.listdir(folder))[:4])}); "
            "resume it with train.checkpoint=last, choose another output_dir, or pass --overwrite to move it "
            "aside"
        )
    foreign = foreign_entries(folder)
    if foreign:
        raise ConfigError(
            f"train.output_dir: {folder} is not a training run (it holds {_listing(sorted(os.listdir(folder)))}; "
            f"not from a run: {_listing(foreign)}); --overwrite only moves aside a folder this trainer wrote: "
            "choose another output_dir or move it yourself"
        )
    number = 1
    while os.path.exists(f"{folder.rstrip(os.sep)}.old-{number}"):
        number += 1
    target = f"{folder.rstrip(os.sep)}.old-{number}"
    os.rename(folder, target)
    return target


def _listing(names: list[str], limit: int = 8) -> str:
    """Names of folder entries for a message: bounded, escaped when not printable."""
    shown = [name if name.isprintable() and len(name) <= 100 else short_repr(name, 100) for name in names[:limit]]
    return ", ".join(shown) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_train_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from recycle_distill.s3prl.compat import apply_compat

    apply_compat()  # the teacher is S3PRL's model code
    from recycle_distill.training.trainer import Trainer

    if not args.check and os.environ.get("RANK", "0") == "0":  # one process decides, before any rank writes
        moved = prepare_output_dir(config.output_dir, resuming=bool(config.train.checkpoint), overwrite=args.overwrite)
        if moved:
            print(f"moved the previous run in {config.output_dir} to {moved}", file=sys.stderr)
    if is_example(args.config) and args.check and missing_example_files(config):
        print(f"error: {', '.join(missing_example_files(config))}: not written yet; the first run of "
              f"{args.config} writes them (--check writes nothing): run it without --check", file=sys.stderr)
        return 2
    if is_example(args.config) and not args.check:
        prepare_example(config, echo=lambda line: print(line, file=sys.stderr))
    trainer = Trainer(config, check_only=args.check)
    if args.check:
        probed = trainer.probe_data()  # refuses data of which every file read would be skipped
        print(f"config OK: {config.family} ({config.objective}), {len(trainer.train_set)} training utterances, "
              f"{trainer.total_steps} steps; {probed}")
        return 0
    summary = trainer.fit()
    if summary.get("interrupted"):
        if trainer.dist.is_main:
            print(f"interrupted at step {summary['steps']} of {trainer.total_steps}: saved {summary['checkpoint']}\n"
                  f"resume with: {resume_command(args, summary['checkpoint'], trainer.dist.world_size)}",
                  file=sys.stderr)
        trainer.dist.shutdown()
        return 130  # as a shell reports a Ctrl-C
    if trainer.dist.is_main:
        print(f"done: {summary['steps']} steps, last loss {summary['last_loss']:.5f}, exported {summary['export']}")
    trainer.dist.shutdown()
    return 0


def resume_command(args: argparse.Namespace, checkpoint: str, world_size: int = 1) -> str:
    """The command line that continues this run from ``checkpoint``: the same program, config
    and overrides (an earlier ``train.checkpoint=`` replaced), shell-quoted."""
    if world_size > 1:
        program = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', world_size)}",
                   "-m", "recycle_distill"]
    elif os.path.basename(sys.argv[0]) == "__main__.py":  # python -m recycle_distill
        program = [sys.executable, "-m", "recycle_distill"]
    else:
        program = ["recycle-distill"]
    overrides = [item for item in args.overrides if not item.strip().startswith("train.checkpoint=")]
    return shlex.join([*program, "train", "-c", args.config, *overrides, f"train.checkpoint={checkpoint}"])
