"""``recycle-distill`` command line: one subcommand per module in :mod:`recycle_distill.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

# subcommand -> module in recycle_distill.commands exposing add_arguments(parser) and run(args) -> int
COMMANDS = {
    "convert": ("convert", "convert a released Lightning checkpoint into a compact safetensors student"),
    "superb": ("superb", "run S3PRL's run_downstream with our upstreams registered"),
    "superb-score": ("superb_score", "compute the SUPERB Overall score from per-task results"),
    "patch-hub": ("patch_hub", "register our upstreams in an S3PRL tree and apply the SUPERB config tweaks"),
    "train": ("train", "distil a student from a teacher (YAML config)"),
    "demo": ("demo", "offline end-to-end demo on a tiny synthetic corpus"),
    "profile": ("profile", "parameters, FLOPs, speed and memory of a student vs HuBERT Base"),
    "cif-prepare": ("cif_prepare", "precompute the language-model teacher vectors of a CIF-HieraDist corpus"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="recycle-distill", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    available = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(f"recycle_distill.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"recycle_distill.commands.{module_name}":
                raise
            continue
        available[name] = module
        command_parser = sub.add_parser(name, help=help_text, description=module.__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command_parser)
    if argv and argv[0] in available and getattr(available[argv[0]], "PASS_THROUGH", False):
        # Commands that forward unknown options to another program parse their own argv.
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return int(available[argv[0]].run_argv(argv[1:]) or 0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    return int(available[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
