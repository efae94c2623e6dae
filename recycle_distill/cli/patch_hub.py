"""The ``patch_hub.py`` command line: arguments, applying or showing the plan, the report.

It lives with the other commands and imports only ``recycle_distill.s3prl.patch`` (standard
library + PyYAML), so ``python patch_hub.py`` runs without torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from recycle_distill.s3prl import patch as s3prl_patch
from recycle_distill.util.messages import plain
from recycle_distill.s3prl.patch.base import (
    BACKUP_SUFFIX,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_WARNINGS,
    RefusedError,
    WriteFailed,
    locate_tree,
)
from recycle_distill.s3prl.patch.plan import apply, show_diff
from recycle_distill.s3prl.patch.runs import (
    DEFAULT_TIMEOUT,
    check_writable,
    plan_patch,
    plan_revert,
    tree_lock,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Register the recycle-distill upstreams (armhubert, maskhubert, "
                    "starhubert, fithubert) in S3PRL's hub.py and apply the SUPERB "
                    "fine-tuning tweaks to its downstream configs.",
        epilog="Exit status: 0 done or nothing to do, 1 some file left alone (see warnings), "
               "2 refused (nothing written), 3 a write failed part way (--revert restores the tree).")
    parser.add_argument("root", type=Path,
                        help="S3PRL git checkout root (holding s3prl/hub.py and "
                             "s3prl/downstream/), or an installed s3prl package directory")
    parser.add_argument("--copy", action="store_true",
                        help="copy upstreams/<family> into s3prl/upstream/<family> and import "
                             "them from there instead of from the installed recycle_distill")
    parser.add_argument("--upstreams", type=Path, default=None, metavar="DIR",
                        help="with --copy: the folder whose <family>/ subfolders are copied "
                             "(default: the installed recycle_distill.upstreams, or this checkout's "
                             "upstreams/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print a unified diff of what would change and write nothing")
    parser.add_argument("--revert", action="store_true",
                        help="restore every file patched by an earlier run, remove the "
                             "registration, copied upstreams and backups")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, lock_timeout: float = DEFAULT_TIMEOUT) -> int:
    """Run the CLI; returns the exit status.

    The whole run (reading the tree, planning, writing) holds the tree's lock, so concurrent
    runs on one tree happen one after the other; a run waits up to ``lock_timeout`` seconds.
    """
    args = parse_args(argv)
    try:
        tree = locate_tree(args.root)
        with tree_lock(tree.package, lock_timeout,
                       on_wait=lambda: print(f"waiting for another patch_hub.py run on {tree.root} ...",
                                             file=sys.stderr)):
            return _run_locked(args, tree)
    except RefusedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except WriteFailed as err:
        # The manifest recorded every change before it was made (plan.apply), so --revert
        # restores the tree whichever write failed.
        again = ("run --revert again once the cause is fixed" if args.revert else
                 f"run `python patch_hub.py --revert {plain(tree.root)}` to restore it, or fix the cause and run again")
        print(f"error: could not write {err}; stopped part way: {again}", file=sys.stderr)
        return EXIT_FAILED


def _run_locked(args: argparse.Namespace, tree) -> int:
    """Plan, apply and report one run (the caller holds the tree lock)."""
    upstreams = args.upstreams or s3prl_patch.default_upstreams_dir()
    plan = (plan_revert(tree) if args.revert
            else plan_patch(tree, args.copy, upstreams, s3prl_patch.default_configs_dir()))
    kind = "S3PRL git checkout" if tree.checkout else "installed s3prl package"
    print(f"{kind}: {tree.root}")
    if args.dry_run:
        print(show_diff(plan), end="")
    else:
        check_writable(plan)  # refuses before the first write, never half way
        apply(plan)
    for line in plan.lines:
        print(line)
    for warning in plan.warnings:
        print(warning, file=sys.stderr)

    verb = "reverted" if args.revert else "patched"
    if plan.changed == 0 and not plan.writes and not plan.removals:
        print(f"Nothing changed: already {verb}." if not plan.warnings
              else "Nothing changed.")
    elif args.dry_run:
        print(f"Dry run: {plan.changed} item(s) would change; nothing was written.")
    else:
        print(f"Done: {plan.changed} item(s) {verb}."
              + ("" if args.revert else f" Originals kept as *{BACKUP_SUFFIX}; "
                 "undo with --revert."))
    if not args.revert and not args.copy and not args.dry_run and plan.changed \
            and importlib.util.find_spec("recycle_distill") is None:
        print("note: recycle_distill is not importable by this Python; install it "
              "(pip install <this repo>) where S3PRL runs, or use --copy.")
    if not args.revert and not args.dry_run:
        note = s3prl_import_note(tree)
        if note:
            print(note)
    return EXIT_WARNINGS if plan.warnings else EXIT_OK


def s3prl_import_note(tree) -> str | None:
    """A note when the ``s3prl`` this Python imports is not the tree just patched (None when it is).

    Found with ``importlib.util.find_spec`` (nothing is imported, torch stays out). A PyPI s3prl
    installed beside a checkout shadows it: ``python run_downstream.py`` in ``<root>/s3prl`` then
    imports the unpatched hub and fails with ``s3prl.hub has no attribute 'armhubert'``.
    """
    spec = importlib.util.find_spec("s3prl")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    found = Path(locations[0]).resolve() if locations else None
    if found == tree.package.resolve():
        return None
    where = (f"imports s3prl from {plain(found)}, not from the tree just patched" if found is not None
             else "cannot import s3prl")
    if tree.checkout:
        root = plain(tree.root)
        fix = (f"install the checkout with `pip install -e {root}`, or run S3PRL's scripts with "
               f"PYTHONPATH={root}")
    else:
        fix = f"run S3PRL with the Python whose site-packages hold {plain(tree.package)}"
    return (f"note: this Python {where}, so S3PRL run with it will not see the registration "
            f"(s3prl.hub has no attribute 'armhubert'): {fix}.")



# ``recycle-distill patch-hub ...`` is the same command as ``python patch_hub.py ...``.
PASS_THROUGH = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("options", nargs=argparse.REMAINDER, help="patch_hub.py's arguments (see --help)")


def run_argv(argv: list[str]) -> int:
    return main(list(argv))


def run(args: argparse.Namespace) -> int:
    return main(args.options)
