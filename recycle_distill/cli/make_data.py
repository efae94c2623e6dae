"""Write tiny corpora in the real datasets' layouts, spoken by espeak-ng, to try things on.

  recycle-distill make-data tiny_data
  recycle-distill make-data tiny_data --only librispeech voxceleb1

Writes, under OUT: LibriSpeech (3 subsets) with S3PRL's len_for_bucket CSVs and char dict
(ASR), speech_commands/{train,test} (KS), VoxCeleb1 with iden_split.txt (SID), aishell
(AISHELL-1 layout, Mandarin) and two tiny random BERT folders, bert-en and bert-zh, whose
tokenizers cover those transcripts (the cif_asr language model). About 5 s and 4 MB; needs
espeak-ng (apt install espeak-ng) and, for the BERT folders, transformers. OUT is written
beside itself and swapped in when complete; it must be new, empty or an earlier make-data
folder (make-data.json), which is replaced as a whole. Then try a student on it:
recycle-distill superb-smoke -u armhubert -k CKPT --data OUT.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CORPUS_NAMES = ("librispeech", "speech_commands", "voxceleb1", "aishell", "bert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="the folder to write (new, empty or an earlier make-data folder)")
    parser.add_argument("--only", nargs="+", choices=CORPUS_NAMES, metavar="CORPUS",
                        help=f"write only these ({', '.join(CORPUS_NAMES)}; default: all)")
    parser.add_argument("--seed", type=int, default=0, help="sentences, voices and weights follow from it (default 0)")


def run(args: argparse.Namespace) -> int:
    from recycle_distill.lab.make_data import make_data

    manifest = make_data(args.out, corpora=args.only, seed=args.seed)
    print(f"wrote {args.out}:")
    for name, entries in manifest["corpora"].items():
        described = [f"{entry} -> {use}" for entry, use in entries.items() if isinstance(use, str)]
        print(f"  {name}: " + "; ".join(described))
    print(f"try a student on it: recycle-distill superb-smoke -u armhubert -k CKPT --data {args.out}")
    return 0
