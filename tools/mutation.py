"""Mutation testing, one module group at a time: copy the tree, run mutmut 3 there, print the kill table.

    .venv/bin/python tools/mutation.py cif            # scratch copy in /tmp/rd-mut-cif, then mutmut run
    .venv/bin/python tools/mutation.py cif --table    # only the table of the last run in that copy
    .venv/bin/python tools/mutation.py hf --sample 120 --seed 1   # a seeded sample of 120 mutants per module
    .venv/bin/python tools/mutation.py hf --resume    # run what the copy has not run yet (no fresh copy)

A group is ``tests/mutmut/<group>.cfg`` (the modules mutated and the fast tests run against each
mutant); mutmut reads one ``[mutmut]`` section, so each group is its own file, copied to
``setup.cfg`` in the scratch copy. The copy holds the files git tracks plus the untracked ones it
does not ignore, so uncommitted work is tested too, and mutants never touch the tree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ROOT / "tests" / "mutmut"
# mutmut 3.8's exit-code meaning (mutmut/stats.py), the statuses the table counts.
STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", None: "not checked", 5: "no tests", 33: "no tests"}
COLUMNS = ("killed", "survived", "timeout", "not checked", "other")


def copy_tree(scratch: Path) -> None:
    """Copy the tracked and untracked-but-not-ignored files of the repository into ``scratch`` (emptied first)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    if scratch.exists():
        shutil.rmtree(scratch)
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_symlink():  # test fixtures hold links: copied as links, as git keeps them
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            (scratch / name).symlink_to(os.readlink(source))
        elif source.is_file():  # a tracked file deleted in the tree is skipped
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, scratch / name)


def statuses(mutants: Path) -> dict[str, Counter]:
    """Per mutated module (its path under ``mutants/``): how many mutants ended in each status.

    Reads the ``*.py.meta`` files mutmut writes beside each mutated module; a status outside
    :data:`STATUS` (suspicious, segfault, skipped) counts as ``other``."""
    table: dict[str, Counter] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = meta.relative_to(mutants).as_posix()[: -len(".meta")]
        counts = Counter(STATUS.get(code, "other") for code in codes.values())
        table[module] = Counter({("other" if k not in COLUMNS else k): v for k, v in counts.items()})
    return table


def mutant_names(mutants: Path) -> dict[str, list[str]]:
    """Per mutated module, the names of its mutants (the keys mutmut's ``*.py.meta`` files hold)."""
    return {meta.relative_to(mutants).as_posix()[: -len(".meta")]: sorted(json.loads(meta.read_text())["exit_code_by_key"])
            for meta in sorted(mutants.rglob("*.py.meta"))}


def sample_names(names: dict[str, list[str]], size: int, seed: int) -> list[str]:
    """``size`` mutants drawn per module without replacement (all of a smaller module), the same for a seed."""
    rng = random.Random(seed)
    return [name for module in sorted(names) for name in rng.sample(names[module], min(size, len(names[module])))]


def wilson(killed: int, checked: int) -> tuple[float, float]:
    """95% Wilson interval of the killed share from ``killed`` of ``checked`` sampled mutants."""
    if not checked:
        return (0.0, 1.0)
    z, share = 1.96, killed / checked
    centre = (share + z * z / (2 * checked)) / (1 + z * z / checked)
    half = z * math.sqrt(share * (1 - share) / checked + z * z / (4 * checked * checked)) / (1 + z * z / checked)
    return (max(0.0, centre - half), min(1.0, centre + half))


def format_table(table: dict[str, Counter]) -> str:
    """The kill table as Markdown: module, mutants, killed, survived, timed out, not checked, other, % killed.

    The share is of the mutants run (killed / (all - not checked)), with its 95% interval when
    only part of the module was run (a sample)."""
    lines = ["| module | mutants | killed | survived | timed out | not checked | other | killed % of run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for module, counts in table.items():
        total = sum(counts.values())
        run = total - counts["not checked"]
        share = f"{100 * counts['killed'] / run:.1f}" if run else "-"
        if run and counts["not checked"]:
            low, high = wilson(counts["killed"], run)
            share += f" ({100 * low:.0f}-{100 * high:.0f})"
        lines.append(f"| `{module}` | {total} | {counts['killed']} | {counts['survived']} | {counts['timeout']} "
                     f"| {counts['not checked']} | {counts['other']} | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("group", help="a tests/mutmut/<group>.cfg name")
    parser.add_argument("--scratch", type=Path, help="the scratch copy (default <temp dir>/rd-mut-<group>)")
    parser.add_argument("--table", action="store_true", help="print the last run's table, run nothing")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--sample", type=int, help="run a seeded random sample of this many mutants per module")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="keep the scratch copy and its results")
    args = parser.parse_args(argv)
    cfg = GROUPS / f"{args.group}.cfg"
    if not cfg.is_file():
        parser.error(f"no group {args.group!r}: {cfg} does not exist (have: "
                     f"{', '.join(sorted(p.stem for p in GROUPS.glob('*.cfg')))})")
    scratch = args.scratch or Path(tempfile.gettempdir()) / f"rd-mut-{args.group}"
    if not args.table:
        if not (args.resume and scratch.is_dir()):
            copy_tree(scratch)
            shutil.copy2(cfg, scratch / "setup.cfg")
        mutmut = [str(Path(sys.executable).with_name("mutmut")), "run", "--max-children", str(args.max_children)]
        # One thread per mutant: forked mutants with torch's thread pool can hang.
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        chosen: list[str] = []
        if args.sample:
            # A name matching no mutant makes mutmut generate the mutants and run no test against them.
            subprocess.run([*mutmut, "no-such-mutant"], cwd=scratch, env=env, check=False)
            chosen = sample_names(mutant_names(scratch / "mutants"), args.sample, args.seed)
        subprocess.run([*mutmut, *chosen], cwd=scratch, env=env, check=False)
    print(format_table(statuses(scratch / "mutants")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
