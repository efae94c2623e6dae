"""Compute the SUPERB Overall score and print it beside the papers' rows.

  recycle-distill superb-score results.yaml
  recycle-distill superb-score result/downstream/ --name my-armhubert
  recycle-distill superb-score results.csv result/downstream/sid_arm --format csv

Inputs: YAML ({model: {task: value}} or {task: value}), CSV (a `model` column and one column per
task), or S3PRL experiment folders / *.log files (test metrics read from log.log, superb.log or
captured stdout). Tasks: PR KS IC SID ER ASR QbE SF_F1 SF_CER ASV SD, in the papers' units
(percent; QbE as MTWV in 0-1). Overall = mean of the 11 with error rates as 100-x and QbE as
100*MTWV; with tasks missing a partial mean is printed and labelled as such.
"""

from __future__ import annotations

import argparse
import sys

from recycle_distill.s3prl.superb.logs import read_results
from recycle_distill.s3prl.superb.score import describe, format_table, load_paper_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+",
                        help="YAML/CSV result tables, S3PRL experiment folders (or folders of them), or *.log files")
    parser.add_argument("--name", default=None,
                        help="model name for everything read (default: per table row / <-u>:<checkpoint> from the logs)")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown", help="table format")
    parser.add_argument("--no-paper", action="store_true", help="do not print the papers' rows")


def run(args: argparse.Namespace) -> int:
    try:
        ours = read_results(args.results, args.name)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not ours:
        print("error: no SUPERB results found in " + ", ".join(args.results), file=sys.stderr)
        return 1
    paper = [] if args.no_paper else load_paper_results()
    print(format_table(ours, paper, args.format), end="")
    if args.format == "markdown":
        print()
        if paper:
            print("paper rows: Overall recomputed from the printed numbers [printed Overall in brackets]")
        print(describe(ours), end="")
    return 0 if any(row.values for row in ours) else 1
