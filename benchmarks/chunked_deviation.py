"""Chunked processing (StudentUpstream(chunk_seconds=, overlap_seconds=)) vs full context, per layer.

  python benchmarks/chunked_deviation.py            # 60 s of espeak-ng speech; tiny fixture + armhubert preset
  python benchmarks/chunked_deviation.py --quick    # smoke test (20 s, the tiny fixture, two settings)

A report, not timed. One recording (espeak-ng sentences in four voices, concatenated; noise
if espeak-ng is missing, and the header says so) goes through the upstream once whole and once
per (chunk, overlap) setting; each layer's relative L2 error ``||chunked - full|| / ||full||``
and mean frame cosine are printed (lab.analysis.precision_error, float64).

The weights are random (the presets) or the tiny test fixtures' (tests/data/fixtures, the
reference code's tiny models, not trained): a random network's deviation says how much of each
frame's state depends on context beyond the window, so the numbers compare settings with each
other and say which layers reach furthest; they are not the error a trained model would make.
"""

from __future__ import annotations

import os
import sys
import tempfile

import common
import torch
from common import ROOT

from recycle_distill import build_student
from recycle_distill.lab.analysis.precision_error import layer_errors
from recycle_distill.s3prl.upstream import StudentUpstream
from recycle_distill.training.data.synth import espeak_available, speak

sys.path.insert(0, os.path.join(ROOT, "tests"))
from conftest import load_fixture  # noqa: E402  (the tiny fixture weights the tests use)

SETTINGS = [(5.0, 0.0), (5.0, 1.0), (5.0, 2.0), (10.0, 0.0), (10.0, 2.0), (10.0, 4.0), (30.0, 2.0), (30.0, 4.0)]
QUICK_SETTINGS = [(5.0, 0.0), (5.0, 2.0)]
SENTENCES = [
    ("The quick brown fox jumps over the lazy dog near the river bank.", "en-us"),
    ("Speech models trained on long recordings need memory that grows with the input.", "en-us+f3"),
    ("Chunked processing keeps only one window of audio in memory at any time.", "en-gb+m3"),
    ("Every layer sees the context inside its window and nothing beyond it.", "en-us+m1"),
]


def recording(seconds: float) -> tuple[torch.Tensor, str]:
    """(S,) float32 at 16 kHz: the sentences repeated up to ``seconds``, and what it is."""
    if espeak_available():
        parts = [torch.from_numpy(speak(text, voice)) for text, voice in SENTENCES]
        what = "espeak-ng speech"
    else:
        parts = [common.waves(1, 3.0, seed=index)[0] for index in range(4)]
        what = "Gaussian noise (espeak-ng missing)"
    wave = torch.cat(parts)
    repeats = int(seconds * 16000) // wave.numel() + 1
    return wave.repeat(repeats)[: int(seconds * 16000)].contiguous(), what


def students(quick: bool) -> list[tuple[str, str, dict, str]]:
    """(label, family, state dict, config) of each student measured."""
    fixture = load_fixture("golden_tiny_armhubert.pt")
    chosen = [("tiny armhubert (fixture)", "armhubert", fixture["state_dict"], {"distiller": fixture["config"]})]
    if not quick:
        torch.manual_seed(0)
        chosen.append(("armhubert preset (random)", "armhubert", build_student("armhubert").state_dict(), "armhubert"))
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--seconds", type=float, default=60.0, help="recording length (default 60)")
    args = parser.parse_args(argv)
    settings = QUICK_SETTINGS if args.quick else SETTINGS
    if args.quick:
        args.seconds = 20.0
    common.setup(args.threads)
    wave, what = recording(args.seconds)
    info = common.print_header("Chunked processing vs full context, per layer",
                               {"input": f"{args.seconds:g} s of {what}", "settings (chunk s, overlap s)": settings})
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for label, family, state, config in students(args.quick):
            path = f"{folder}/weights.pt"
            torch.save(state, path)
            with torch.inference_mode():
                full = StudentUpstream(path, config, family=family)([wave])["hidden_states"]
                rows = []
                for chunk, overlap in settings:
                    upstream = StudentUpstream(path, config, family=family, chunk_seconds=chunk, overlap_seconds=overlap)
                    errors = layer_errors(full, upstream([wave])["hidden_states"])
                    rows.append([f"{chunk:g}", f"{overlap:g}"] + [f"{e.relative_l2:.3f}" for e in errors]
                                + [f"{min(e.cosine for e in errors):.4f}"])
                    results.append({"student": label, "chunk_seconds": chunk, "overlap_seconds": overlap,
                                    "layers": [e.to_dict() for e in errors]})
            print(f"\n{label}: relative L2 error by layer (hidden_states index), worst frame-mean cosine")
            print(common.table(["chunk s", "overlap s"] + [str(i) for i in range(len(full))] + ["min cos"], rows))
    common.write_json(args.json, {"machine": info, "input": what, "seconds": args.seconds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
