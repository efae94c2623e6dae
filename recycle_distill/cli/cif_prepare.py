"""Precompute the language-model teacher vectors of a CIF-HieraDist corpus into a feature cache.

  recycle-distill cif-prepare --corpus aishell --root data_aishell --splits train dev test \\
      --lm bert-base-chinese/ --cache cache/aishell-bert
  recycle-distill cif-prepare --corpus librispeech --root LibriSpeech \\
      --splits train-clean-100 dev-clean test-clean --lm bert-base-uncased/ --cache cache/libri-bert

Every split is checked first (transcripts the tokenizer cannot split into aligned units are
counted; --unit-error fail stops, skip leaves them out, as training does). The cache is
resumable: run the same command again after an interruption. A cache built with another
tokenizer or model is detected by its fingerprint and rebuilt. Only a folder that is one of our
caches (its index.json says so) is ever rebuilt: any other folder holding an index.json, or files
named like a cache's shards, is refused and left as it is.
"""

from __future__ import annotations

import argparse
import sys
import time

from recycle_distill.downstreams.cif_asr.corpus import CorpusError
from recycle_distill.downstreams.cif_asr.dataset import CORPORA, DEFAULT_LANGUAGE, prepare_split
from recycle_distill.downstreams.cif_asr.feature_cache import DTYPES, FeatureCacheError, build_cache
from recycle_distill.downstreams.cif_asr.lm_teacher import LanguageModelTeacher, TeacherError
from recycle_distill.downstreams.cif_asr.text import LANGUAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, choices=CORPORA, help="corpus layout")
    parser.add_argument("--root", required=True,
                        help="corpus root (LibriSpeech: holds the subsets; AISHELL-1: holds wav/ and transcript/)")
    parser.add_argument("--splits", required=True, nargs="+", metavar="S",
                        help="LibriSpeech subsets (train-clean-100 ...) or AISHELL-1 splits (train dev test)")
    parser.add_argument("--lm", required=True, help="local Hugging Face language-model folder")
    parser.add_argument("--cache", required=True,
                        help="feature cache folder (created; an existing folder that is not a feature cache "
                             "but holds an index.json is refused)")
    parser.add_argument("--language", choices=LANGUAGES, default=None,
                        help="units: zh = one per character, en = WordPieces (default: zh for aishell, en for librispeech)")
    parser.add_argument("--unit-error", choices=("skip", "fail"), default="skip",
                        help="transcripts that do not split into aligned units: leave out (default) or stop")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per language-model forward pass")
    parser.add_argument("--shard-size", type=int, default=1000, help="utterances per cache shard (unit of resumption)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="storage dtype of the vectors")
    parser.add_argument("--device", default="cpu", help="device of the language model (cpu, cuda, cuda:1 ...)")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    language = args.language or DEFAULT_LANGUAGE[args.corpus]
    try:
        if args.batch_size < 1 or args.shard_size < 1:
            raise ValueError("--batch-size and --shard-size must be >= 1")
        teacher = LanguageModelTeacher.from_dir(args.lm, device=args.device)
        prepared = [prepare_split(args.corpus, args.root, split, teacher.tokenizer, language,
                                  unit_error=args.unit_error, max_tokens=teacher.max_tokens) for split in args.splits]
        items = [pair for split in prepared for pair in split.lm_items()]
        report = build_cache(args.cache, items, teacher, shard_size=args.shard_size, batch_size=args.batch_size,
                             language=language, dtype=args.dtype)
    except (CorpusError, TeacherError, FeatureCacheError, ValueError, OSError, RuntimeError) as error:
        message = " ".join(str(error).split())  # one line, whatever the exception carried
        print(f"error: {message}", file=sys.stderr)
        return 1
    for split in prepared:
        problems = ", ".join(f"{kind} {count}" for kind, count in sorted(split.problem_counts.items()))
        print(f"{args.corpus} {split.name}: {len(split)} utterances"
              + (f", {split.dropped} skipped ({problems})" if split.dropped else ""))
    if report.rebuilt:
        print(f"rebuilt: the cache had fingerprint {report.previous_fingerprint}")
    print(f"cache {report.folder}: {report.computed} computed, {report.reused} reused, "
          f"{report.shards_written} new shards; language model {args.lm} (hidden {teacher.hidden_size}, "
          f"fingerprint {report.fingerprint[:16]}); {time.perf_counter() - started:.1f} s")
    return 0
