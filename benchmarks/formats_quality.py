"""Quality of every inference format: per-layer error of ``hidden_states`` against fp32.

A report, not a timing: for each model and each format it prints, layer by layer, the
relative L2 error and the mean frame cosine of the format's ``hidden_states`` against the
same model with the plain fp32 blocks (the model as built, no ``optimize_for_inference``),
and names the worst layer (largest relative error) of each (model, format).

Formats: ``fp32-fast`` (the CPU fast blocks in fp32: a sanity row, rounding only), ``bf16``
and ``int8`` (torch dynamic int8 Linears; skipped with the reason where this torch lacks
it) through :func:`recycle_distill.inference.optimize_for_inference`, and ``onnx-fp32`` /
``onnx-int8`` (``export_onnx`` then ONNX Runtime through ``OnnxStudentUpstream``; "not
available" without onnx/onnxruntime).

Models: the tiny fixture weights of ARMHuBERT, MaskHuBERT and STaRHuBERT
(``tests/data/fixtures``), a tiny random FitHuBERT (seed 0, the test suite's shape) and the
four full-size presets with random weights (seed 0; ``--quick`` leaves them out).

Input: espeak-ng speech, a few English sentences in several voices, run as one padded batch
(errors count the valid frames only). Without espeak-ng the script stops: noise is not the
input these models see.

  python benchmarks/formats_quality.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from common import ROOT, base_parser, machine, setup, write_json
from torch import Tensor, nn

from recycle_distill import build_student
from recycle_distill.lab.analysis.precision_error import layer_errors, worst_layer
from recycle_distill.training.data.synth import espeak_available, speak
from recycle_distill.inference import optimize_for_inference, torch_int8_available
from recycle_distill.students.blocks.masks import pad_waveforms

FIXTURES = os.path.join(ROOT, "tests", "data", "fixtures")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from helpers.train_helpers import tiny_distiller  # noqa: E402  (the tiny FitHuBERT shape the tests use)

# (sentence, espeak-ng voice, pitch): one utterance each, 2-4 s, four voices.
UTTERANCES = (
    ("the quick brown fox jumps over the lazy dog near the river bank", "en-us+m1", 45),
    ("she found an old letter under the window this morning", "en-gb+f3", 65),
    ("we walked slowly through the quiet garden after the summer rain", "en+m3", 35),
    ("turn left at the city library and open the green door", "en-us+f4", 70),
)
FAMILIES = ("armhubert", "maskhubert", "starhubert")
PRESETS = ("armhubert", "maskhubert", "starhubert", "fithubert")
FORMATS = ("fp32-fast", "bf16", "int8", "onnx-fp32", "onnx-int8")
REFERENCE = "fp32, plain blocks (the model as built, no optimize_for_inference)"

Runner = Callable[[list[Tensor]], list[Tensor]]


@dataclass
class Result:
    """One (model, format): ``status`` ok | skipped | not available | failed, with the reason."""

    model: str
    format: str
    status: str
    reason: str = ""
    layers: list[dict] = field(default_factory=list)
    worst: Optional[dict] = None
    seconds: float = 0.0


def speech() -> list[Tensor]:
    """The 16 kHz float32 espeak-ng utterances of :data:`UTTERANCES`."""
    return [torch.from_numpy(speak(text, voice, pitch)) for text, voice, pitch in UTTERANCES]


def models(quick: bool) -> list[tuple[str, nn.Module]]:
    """(label, fp32 student in eval mode) for every model the report covers."""
    found = []
    for family in FAMILIES:
        fixture = torch.load(os.path.join(FIXTURES, f"golden_tiny_{family}.pt"), weights_only=True)
        model = build_student(fixture["config"], family=family)
        model.load_state_dict(fixture["state_dict"])
        found.append((f"tiny {family} (fixture weights)", model.eval()))
    torch.manual_seed(0)
    found.append(("tiny fithubert (random, seed 0)", build_student(tiny_distiller("fithubert"), family="fithubert").eval()))
    if not quick:
        for preset in PRESETS:
            torch.manual_seed(0)
            found.append((f"{preset} preset (random, seed 0)", build_student(preset).eval()))
    return found


def torch_runner(model: nn.Module, dtype: str) -> Runner:
    fast = optimize_for_inference(model, dtype)

    def run(wavs: list[Tensor]) -> list[Tensor]:
        batch, lengths = pad_waveforms(wavs)
        return list(fast(batch, lengths).hidden_states)

    return run


def onnx_runner(model: nn.Module, dtype: str, folder: str) -> Runner:
    from recycle_distill.inference.onnx_export import export_onnx
    from recycle_distill.inference.onnx_runtime import OnnxStudentUpstream

    path = os.path.join(folder, f"{model.family}-{dtype}.onnx")
    export_onnx(model, path, family=model.family, dtype=dtype)
    upstream = OnnxStudentUpstream(path, model.family, threads=torch.get_num_threads())
    return lambda wavs: upstream(wavs)["hidden_states"]


def onnx_missing() -> str:
    """Why the ONNX formats cannot run here ("" when they can)."""
    import importlib.util

    for module in ("onnx", "onnxruntime", "recycle_distill.inference.onnx_export",
                   "recycle_distill.inference.onnx_runtime"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install '.[onnx]')"
        except ImportError as err:
            return f"{module}: {err}"
    return ""


def measure(label: str, model: nn.Module, fmt: str, wavs: list[Tensor], reference: Any, folder: str,
            why_no_int8: str, why_no_onnx: str) -> Result:
    """Run ``model`` in format ``fmt`` on ``wavs`` and compare with the fp32 ``reference`` output."""
    if fmt == "int8" and why_no_int8:
        return Result(label, fmt, "skipped", why_no_int8)
    if fmt.startswith("onnx") and why_no_onnx:
        return Result(label, fmt, "not available", why_no_onnx)
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            if fmt.startswith("onnx"):
                runner = onnx_runner(model, fmt.split("-")[1], folder)
            else:
                runner = torch_runner(model, "fp32" if fmt == "fp32-fast" else fmt)
            states = runner(wavs)
        errors = layer_errors(reference.hidden_states, states, reference.padding_mask)
    except Exception as err:  # a report: one broken format must not hide the others
        return Result(label, fmt, "failed", f"{type(err).__name__}: {err}".splitlines()[0])
    return Result(label, fmt, "ok", layers=[e.to_dict() for e in errors], worst=worst_layer(errors).to_dict(),
                  seconds=time.perf_counter() - started)


def print_model(label: str, results: list[Result]) -> None:
    print(f"\n{label}")
    for result in results:
        if result.status != "ok":
            print(f"  {result.format:<10} {result.status}: {result.reason}")
            continue
        print(f"  {result.format:<10} layer  rel L2    cosine")
        for layer in result.layers:
            print(f"  {'':<10} {layer['layer']:>5}  {layer['relative_l2']:.2e}  {layer['cosine']:.6f}")
        worst = result.worst
        print(f"  {'':<10} worst: layer {worst['layer']} ({worst['relative_l2']:.2e}, cosine {worst['cosine']:.6f})")


def print_summary(results: list[Result]) -> None:
    """The worst layer of every (model, format), one table."""
    labels = list(dict.fromkeys(r.model for r in results))
    width = max(len(label) for label in labels)
    print(f"\nworst layer (relative L2 error / layer index) against {REFERENCE}")
    print(f"{'model':<{width}}  " + "  ".join(f"{fmt:>14}" for fmt in FORMATS))
    for label in labels:
        cells = []
        for fmt in FORMATS:
            result = next(r for r in results if r.model == label and r.format == fmt)
            cells.append(f"{result.worst['relative_l2']:.2e} / L{result.worst['layer']}" if result.status == "ok"
                         else result.status)
        print(f"{label:<{width}}  " + "  ".join(f"{cell:>14}" for cell in cells))


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0], repeats=1)
    args = parser.parse_args()
    if not espeak_available():
        print("error: espeak-ng is not available (apt-get install -y espeak-ng; RECYCLE_DISTILL_NO_ESPEAK unset): "
              "this report needs speech, not noise", file=sys.stderr)
        return 1
    setup(args.threads)
    started = time.perf_counter()
    wavs = speech()
    why_no_int8 = torch_int8_available()[1]
    why_no_onnx = onnx_missing()
    print(f"reference: {REFERENCE}")
    print(f"input: {len(wavs)} espeak-ng utterances, one padded batch ("
          + ", ".join(f"{w.numel() / 16000:.2f} s {v}" for w, (_, v, _) in zip(wavs, UTTERANCES))
          + f"); torch {torch.__version__}, {torch.get_num_threads()} threads")
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as folder:
        for label, model in models(args.quick):
            with torch.inference_mode():
                reference = model(*pad_waveforms(wavs))
            mine = [measure(label, model, fmt, wavs, reference, folder, why_no_int8, why_no_onnx) for fmt in FORMATS]
            print_model(label, mine)
            results += mine
            for name in os.listdir(folder):  # full-size ONNX files are ~100 MB each
                os.remove(os.path.join(folder, name))
    print_summary(results)
    elapsed = time.perf_counter() - started
    print(f"total: {elapsed:.0f} s")
    if args.json:
        write_json(args.json, {
            "machine": machine(), "reference": REFERENCE, "elapsed_s": elapsed,
            "utterances": [{"text": t, "voice": v, "pitch": p, "seconds": w.numel() / 16000}
                           for w, (t, v, p) in zip(wavs, UTTERANCES)],
            "results": [vars(r) for r in results],
        })
    failed = [f"{r.model} / {r.format}" for r in results if r.status == "failed"]
    if failed:
        print(f"error: {len(failed)} format(s) failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
