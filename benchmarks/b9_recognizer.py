"""B9: the whole CIF recognizer (ARMHuBERT upstream, featurizer, cif_asr recognizer, beam search)
per deployable format: real-time factor, one process, interleaved rounds.

  python benchmarks/b9_recognizer.py            # 10 s utterances, batch 1 and 8, 2 threads, 3 rounds
  python benchmarks/b9_recognizer.py --quick    # smoke test (tiny sizes, one round)
  python benchmarks/b9_recognizer.py --json PATH

Model: the ARMHuBERT preset (``build_student("armhubert")``, the real architecture, random
weights), S3PRL's featurizer at its initial weights (an equal-weight sum of the hidden states)
and the ``cif_asr`` recognizer at its defaults (``docs/cif_asr.md``: d 256, three 2-layer
Conformer stacks, 2-layer decoder), random weights, over :data:`VOCAB` units; beam 10.
Input: Gaussian noise, ``--seconds`` long, batches of equal length (no padding).

Formats, all from the same weights:
  * ``torch fp32``: the student with our fast CPU blocks (what the S3PRL upstream runs by
    default) and the recognizer, in PyTorch;
  * ``torch bf16``: the same with the student in bf16 (``optimize_for_inference(.., "bf16")``),
    the recognizer in fp32;
  * ``onnx fp32`` / ``onnx int8``: ``export_recognizer_onnx`` folders run by the torch-free
    :class:`~recycle_distill.recognizer.onnx_runner.OnnxRecognizer` (int8: dynamic quantization
    of the MatMul/Gemm weights; the CIF stays float32). ORT threads = torch threads.

Each batch size is one interleaved series (every round runs every format), times are medians,
speed-ups medians of per-round ratios against ``torch fp32``. RTF = wall time / audio seconds.
"unit errors vs torch fp32": the edit distance of each format's unit sequences to the fp32
ones over the fp32 units (random weights: this measures how far a format moves the decisions,
not accuracy). Goal: the best deployable format (bf16 student or either ONNX) >= 2x torch fp32.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any, Callable

import numpy as np
import torch

import common

from recycle_distill.s3prl.compat import apply_compat

apply_compat()  # before anything imports torchaudio (torchaudio >= 2.9 stacks)

from recycle_distill.downstreams.cif_asr.config import DecodeConfig, LossConfig, ModelConfig
from recycle_distill.downstreams.cif_asr.metrics import character_error_rate
from recycle_distill.downstreams.cif_asr.model import CifRecognizer
from recycle_distill.downstreams.cif_asr.text import SPECIALS, UnitVocabulary
from recycle_distill.students.build import build_student

FORMATS = ("torch fp32", "torch bf16", "onnx fp32", "onnx int8")
BASELINE = "torch fp32"
GOAL = 2.0
VOCAB = 5000  # units seen in training (a LibriSpeech-scale WordPiece subset)
BEAM = 10
QUICK = dict(student={"encoder_layers": 2, "reuse_pattern": "[True, False]"}, vocab=50,
             model=dict(d_model=64, conformer_ffn=128, predictor_channels=64, decoder_ffn=128))


def build(quick: bool) -> tuple[torch.nn.Module, torch.Tensor, CifRecognizer, UnitVocabulary]:
    """(plain fp32 student, featurizer weights (N,), recognizer, vocabulary), seed 0."""
    torch.manual_seed(0)
    student = build_student("armhubert", **(QUICK["student"] if quick else {})).eval()
    with torch.no_grad():
        states = student(torch.zeros(1, 16000)).hidden_states
    size = QUICK["vocab"] if quick else VOCAB
    # One character per unit (CJK), so the character error rate is a unit error rate.
    units = [chr(0x4E00 + i) for i in range(size)]
    vocab = UnitVocabulary([*SPECIALS, *units], list(range(len(SPECIALS) + size)), "zh", "b9-random")
    model = CifRecognizer(ModelConfig(**(QUICK["model"] if quick else {})), LossConfig(), states[0].shape[-1],
                          student.downsample_rate, len(vocab)).eval()
    weights = torch.softmax(torch.zeros(len(states)), dim=0)  # S3PRL's Featurizer at initialisation
    return student, weights, model, vocab


def torch_row(student: torch.nn.Module, weights: torch.Tensor, model: CifRecognizer,
              decode: DecodeConfig) -> Callable[[list[np.ndarray]], list[list[int]]]:
    """What the PyTorch recognizer computes: student, weighted sum, ``round(S / rate)`` frames, recognize."""

    @torch.inference_mode()
    def run(waves: list[np.ndarray]) -> list[list[int]]:
        batch = torch.from_numpy(np.stack(waves))  # equal lengths: no padding
        dtype = next(student.parameters()).dtype
        states = student(batch.to(dtype)).hidden_states
        features = (weights.view(-1, 1, 1, 1) * torch.stack([s.float() for s in states])).sum(0)
        lengths = torch.full((len(waves),), min(round(batch.shape[1] / student.downsample_rate), features.shape[1]))
        return model.recognize(features, lengths, decode)[0]

    return run


def onnx_row(folder: str, threads: int) -> Callable[[list[np.ndarray]], list[list[int]]]:
    from recycle_distill.recognizer.onnx_runner import OnnxRecognizer

    runner = OnnxRecognizer.from_folder(folder, threads=threads)

    def run(waves: list[np.ndarray]) -> list[list[int]]:
        cif, lengths, _, _ = runner.acoustic(waves)
        return runner.decode(cif, lengths)

    return run


def rows(quick: bool, threads: int, folder: str) -> dict[str, Callable]:
    from recycle_distill.inference import optimize_for_inference
    from recycle_distill.recognizer.onnx_export import export_recognizer_onnx

    student, weights, model, vocab = build(quick)
    decode = DecodeConfig(beam_size=BEAM)
    out = {fmt: torch_row(optimize_for_inference(student, precision), weights, model, decode)
           for fmt, precision in (("torch fp32", "fp32"), ("torch bf16", "bf16"))}
    for dtype in ("fp32", "int8"):
        path = f"{folder}/{dtype}"
        export_recognizer_onnx(path, student=student, family="armhubert", layer_weights=weights, recognizer=model,
                               vocab=vocab, beam_size=BEAM, dtype=dtype)
        out[f"onnx {dtype}"] = onnx_row(path, threads)
    return out


def unit_errors(hypotheses: list[list[int]], reference: list[list[int]]) -> float:
    as_text = lambda seqs: ["".join(chr(0x4E00 + u) for u in seq) for seq in seqs]  # noqa: E731
    return character_error_rate(as_text(hypotheses), as_text(reference))


def series(formats: dict[str, Callable], waves: list[np.ndarray], repeats: int, warmup: int) -> dict[str, Any]:
    """One interleaved series at one batch: times, RTF, speed-ups and unit errors per format."""
    outputs = {fmt: run(waves) for fmt, run in formats.items()}
    times = common.time_rounds({fmt: (lambda run=run: run(waves)) for fmt, run in formats.items()}, repeats, warmup)
    audio = sum(len(w) for w in waves) / common.SAMPLE_RATE
    result = {}
    for fmt in formats:
        result[fmt] = {
            "seconds": common.median(times[fmt]), "rtf": common.median(times[fmt]) / audio,
            "speedup": common.paired_ratio(times[BASELINE], times[fmt]),
            "unit_errors": unit_errors(outputs[fmt], outputs[BASELINE]),
            "units": sum(len(h) for h in outputs[fmt]), "times": times[fmt],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length (default 10)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.batches, args.repeats, args.warmup = 1.0, [1, 2], 1, 0
    common.setup(args.threads)
    info = common.print_header("B9 recognizer formats", {
        "seconds": args.seconds, "batches": args.batches, "repeats": args.repeats, "beam": BEAM,
        "vocab": QUICK["vocab"] if args.quick else VOCAB, "quick": args.quick})
    results: dict[str, Any] = {"machine": info, "series": {}}
    with tempfile.TemporaryDirectory() as folder:
        formats = rows(args.quick, args.threads, folder)
        for batch in args.batches:
            rng = np.random.default_rng(batch)
            waves = [rng.standard_normal(int(args.seconds * common.SAMPLE_RATE)).astype(np.float32)
                     for _ in range(batch)]
            results["series"][batch] = series(formats, waves, args.repeats, args.warmup)
    table = []
    for batch, result in results["series"].items():
        for fmt, r in result.items():
            table.append([batch, fmt, f"{r['seconds']:.3f}", f"{r['rtf']:.4f}", f"{r['speedup']:.2f}x",
                          f"{100 * r['unit_errors']:.1f}%", r["units"]])
    print(common.table(["batch", "format", "s / batch", "RTF", "vs torch fp32", "unit errors vs fp32", "units"],
                       table))
    for batch, result in results["series"].items():
        best = max((fmt for fmt in FORMATS if fmt != BASELINE), key=lambda fmt: result[fmt]["speedup"])
        speedup = result[best]["speedup"]
        print(f"goal (batch {batch}): best deployable format >= {GOAL:g}x torch fp32: {best} {speedup:.2f}x -> "
              f"{common.verdict(speedup, GOAL)}")
        results["series"][batch]["goal"] = {"best": best, "speedup": speedup, "met": speedup >= GOAL}
    common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
