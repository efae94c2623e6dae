"""``recycle-distill`` command line: one subcommand per module in :mod:`recycle_distill.cli`.

Layer ``cli``, the top wing: may import util, families, students.config, students.blocks,
inference.blocks, students, inference, checkpoint, hf_export, downstreams, s3prl, recognizer, training and
lab; only the package facade (``recycle_distill/__init__.py``, ``__main__.py``) sits above.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import sys
from importlib import metadata
from typing import Optional, Sequence

from recycle_distill.util.version import VERSION

# subcommand -> module in recycle_distill.cli exposing add_arguments(parser) and run(args) -> int
COMMANDS = {
    "convert": ("convert", "convert a released Lightning checkpoint into a compact safetensors student"),
    "superb": ("superb", "run S3PRL's run_downstream with our upstreams registered"),
    "superb-score": ("superb_score", "compute the SUPERB Overall score from per-task results"),
    "patch-hub": ("patch_hub", "register our upstreams in an S3PRL tree and apply the SUPERB config tweaks"),
    "train": ("train", "distil a student from a teacher (YAML config)"),
    "demo": ("demo", "offline end-to-end demo on a tiny synthetic corpus"),
    "profile": ("profile", "parameters, FLOPs, speed and memory of a student vs HuBERT Base"),
    "export": ("export", "export a student (checkpoint, preset or release) as safetensors, a Hugging Face folder or ONNX"),
    "cif-prepare": ("cif_prepare", "precompute the language-model teacher vectors of a CIF-HieraDist corpus"),
    "transcribe": ("transcribe", "transcribe recordings with a trained cif_asr experiment (text, JSON lines, token times)"),
    "average-checkpoints": ("average_checkpoints", "average the last N (or N named) checkpoints of one S3PRL experiment"),
    "make-data": ("make_data", "write tiny espeak-ng corpora in real layouts (LibriSpeech, Speech Commands, VoxCeleb1, AISHELL-1) and tiny BERTs"),
    "superb-smoke": ("superb_smoke", "train a few SUPERB tasks for a few steps on make-data corpora and print one table"),
}


DEBUG_ENV = "RECYCLE_DISTILL_DEBUG"  # 1: show the traceback of an error instead of one line
GLOBAL_FLAGS = ("-v", "--verbose", "--debug")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a subcommand; an error is one ``error: ...`` line on stderr and exit status 1
    (2 for a refused config), unless ``--debug`` or ``RECYCLE_DISTILL_DEBUG=1`` asks for the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Our own flags come before the command name; everything after it belongs to the command
    # (and, for pass-through commands, to the program they run: --debug is not forwarded).
    leading = []
    while argv and argv[0] in GLOBAL_FLAGS:
        leading.append(argv.pop(0))
    debug = "--debug" in leading or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    previous = os.environ.get(DEBUG_ENV)
    if debug:
        os.environ[DEBUG_ENV] = "1"  # child and worker processes see it too
    try:
        return _main(leading + argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (every error becomes one line unless debugging)
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2 if type(err).__name__ == "ConfigError" else 1
    finally:
        if previous is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = previous


def one_line(err: BaseException) -> str:
    """An exception as one line: its message's lines joined; unexpected types are named."""
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    known = isinstance(err, (OSError, ValueError, RuntimeError, LookupError)) and text
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    if not known:
        text = f"{type(err).__name__}: {text or 'no message'} (run with --debug for the traceback)"
    return text if len(text) <= 2000 else text[:2000] + " ..."


def version_line() -> str:
    """``recycle-distill X.Y.Z (torch A.B.C, Python D.E.F)``: what a bug report needs, without importing torch."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"recycle-distill {VERSION} (torch {torch_version}, Python {platform.python_version()})"


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recycle-distill", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print the package, torch and Python versions, then exit")
    parser.add_argument("--debug", action="store_true",
                        help=f"show tracebacks instead of one-line errors (also {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    available = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(f"recycle_distill.cli.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"recycle_distill.cli.{module_name}":
                raise
            continue
        available[name] = module
        command_parser = sub.add_parser(name, help=help_text, description=module.__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command_parser)
    count = 0
    while count < len(argv) and argv[count] in GLOBAL_FLAGS:
        count += 1
    flags, rest = argv[:count], argv[count:]
    if rest and rest[0] in available and getattr(available[rest[0]], "PASS_THROUGH", False):
        # Commands that forward unknown options to another program parse their own argv.
        verbose = any(flag in ("-v", "--verbose") for flag in flags)
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        return int(available[rest[0]].run_argv(rest[1:]) or 0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    return int(available[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
