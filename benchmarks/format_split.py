"""Where a forward's time and FLOPs go: CNN, attention, Linear and other, for every format.

Phases (the same four for students and HuBERT Base, for PyTorch and ONNX Runtime):

* **CNN**: everything inside the convolutional feature extractor (convs, norms, GELUs).
* **Linear**: every matmul with a weight: ``nn.Linear`` modules (q/k/v/out projections, FFN,
  feature projection, heads; torch's dynamic int8 Linear too) and the fused q/k/v ``linear``
  of the fast attention block.
* **attention**: inside the attention blocks, everything but their projections: score and
  value matmuls (or the fused SDPA kernel), masking, softmax, reshapes.
* **other**: the rest (positional conv, LayerNorms, FFN activation, residual adds, casts).

PyTorch formats: forward hooks open a ``record_function`` range around the feature
extractor, each attention block and each Linear module; ``torch.profiler`` records a
forward, and each op's *self* CPU time goes to the innermost range around it (a weight
matmul inside an attention range counts as Linear). ONNX Runtime: its own profiler
(``SessionOptions.enable_profiling``), node kernel times of a run, grouped by the module
scope the exporter writes into each node name (``/student/feature_extractor/...``,
``.../self_attn/q_proj/MatMul``) and by op type for the nodes ORT fused under new names.
Both: one warm-up run, then the per-phase median of three profiled runs.
FLOPs per phase: ``FlopCounterMode``'s per-module counts (CNN = the feature extractor) and
per-op counts (Linear = ``addmm``/``mm``, attention = ``bmm``/SDPA).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from typing import Any, Callable

import torch
from torch import nn
from torch.utils import flop_counter

from recycle_distill.lab import profiling

PHASES = ("CNN", "attention", "Linear", "other")
_MARK = "b6-phase:"
# aten ops that are a matmul with a weight (the Linear phase wherever they run, outside the CNN).
TORCH_LINEAR_OPS = {"aten::addmm", "aten::mm", "aten::linear", "aten::_addmm_activation",
                    "quantized::linear_dynamic", "aten::mkldnn_linear"}
ORT_MATMUL_OPS = {"MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat",
                  "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "QGemm"}
_LINEAR_SCOPES = ("_proj/", "/fc1/", "/fc2/", "/proj_head", "/post_extract_proj/", "/final_proj/")


def _is_linear(module: nn.Module) -> bool:
    # torch's dynamic int8 Linear is not an nn.Linear subclass; its class is named Linear too.
    return isinstance(module, nn.Linear) or type(module).__name__ == "Linear"


def _phase_modules(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, phase) for the feature extractor, attention blocks and Linear modules of ``model``."""
    found = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "feature_extractor":
            found.append((module, "CNN"))
        elif leaf == "self_attn":
            found.append((module, "attention"))
        elif _is_linear(module):
            found.append((module, "Linear"))
    return found


def _install_ranges(model: nn.Module) -> list[Any]:
    """Hooks that wrap each phase module's forward in a ``record_function`` range."""
    handles = []
    for module, phase in _phase_modules(model):
        stack: list[Any] = []

        def enter(mod: nn.Module, args: Any, phase: str = phase, stack: list = stack) -> None:
            ctx = torch.profiler.record_function(_MARK + phase)
            ctx.__enter__()
            stack.append(ctx)

        def leave(mod: nn.Module, args: Any, out: Any, stack: list = stack) -> None:
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _torch_phase(event: Any) -> str:
    """The phase of one profiler event: innermost marked range, weight matmuls as Linear."""
    if event.name.startswith(_MARK):
        return event.name[len(_MARK):]
    parent = event.cpu_parent
    while parent is not None and not parent.name.startswith(_MARK):
        parent = parent.cpu_parent
    scope = parent.name[len(_MARK):] if parent is not None else "other"
    if scope != "CNN" and event.name in TORCH_LINEAR_OPS:
        return "Linear"
    return scope


def _median_split(splits: list[dict[str, float]]) -> dict[str, float]:
    """Per-phase median over repeated splits (robust to a burst of load during one run)."""
    return {phase: statistics.median(split[phase] for split in splits) for phase in PHASES}


def torch_time_split(model: nn.Module, forward: Callable[[], Any], repeats: int = 3) -> dict[str, float]:
    """Seconds of one ``forward()`` per phase (self CPU time of every op, see module docstring).

    ``model`` is the module whose submodules ``forward`` runs (hooks are removed afterwards).
    One warm-up call, then ``repeats`` profiled calls; the per-phase median.
    """
    from torch.profiler import ProfilerActivity, profile

    handles = _install_ranges(model)
    splits = []
    try:
        with torch.inference_mode():
            forward()  # warm caches and derived weights outside the profile
            for _ in range(repeats):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    forward()
                split = dict.fromkeys(PHASES, 0.0)
                for event in prof.events():
                    if event.device_type == torch.autograd.DeviceType.CPU:
                        split[_torch_phase(event)] += event.self_cpu_time_total / 1e6
                splits.append(split)
    finally:
        for handle in handles:
            handle.remove()
    return _median_split(splits)


def _ort_phase(name: str, op: str, shapes: list, previous: str) -> str:
    """The phase of one ONNX Runtime node from its scoped name, op type and input shapes.

    ``previous``: the phase of the node run before it. Nodes ORT fused and renamed (e.g.
    ``Gelu_token_3``) lost their scope: inside the CNN they follow a CNN node; elsewhere a
    matmul with a 2-D second input is a Linear, another matmul attention, the rest other.
    """
    if "/feature_extractor/" in name:
        return "CNN"
    if "/" not in name:
        if previous == "CNN":
            return "CNN"
        if op in ORT_MATMUL_OPS:
            weight_like = len(shapes) > 1 and len(next(iter(shapes[1].values()), [])) <= 2
            return "Linear" if weight_like else "attention"
        return "other"
    if any(scope in name for scope in _LINEAR_SCOPES):
        return "Linear"
    if "/self_attn/" in name:
        return "attention"
    return "Linear" if op in ORT_MATMUL_OPS else "other"


def ort_time_split(onnx_path: str, feeds: dict[str, Any], threads: int, repeats: int = 3) -> dict[str, float]:
    """Seconds per phase of one ONNX Runtime run of ``onnx_path`` on ``feeds``: one warm-up run,
    then the per-phase median of ``repeats`` profiled runs."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "ort")
        session = ort.InferenceSession(onnx_path, sess_options=options, providers=["CPUExecutionProvider"])
        for _ in range(1 + repeats):
            session.run(None, feeds)
        with open(session.end_profiling()) as handle:
            events = json.load(handle)
    runs = sorted(e["ts"] for e in events if e.get("name") == "model_run")[1:]  # the warm-up run is first
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    splits = []
    for index, start in enumerate(runs):
        end = runs[index + 1] if index + 1 < len(runs) else float("inf")
        split, phase = dict.fromkeys(PHASES, 0.0), "other"
        for event in nodes:
            if start <= event["ts"] < end:
                args = event.get("args", {})
                name = event["name"][: -len("_kernel_time")]
                phase = _ort_phase(name, args.get("op_name", ""), args.get("input_type_shape", []), phase)
                split[phase] += event["dur"] / 1e6
        splits.append(split)
    return _median_split(splits)


def flop_split(model: nn.Module, forward: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of one ``forward()`` per phase (module docstring), with profiling's extra formulas.

    ``model`` has the ``feature_extractor`` child that ``forward`` runs. FlopCounterMode names
    modules from the outermost module *called*: ``ARMHuBERT.feature_extractor`` when
    ``forward`` calls the student, ``ConvFeatureExtractionModel`` when it calls a method
    (S3PRL's ``extract_features``).
    """
    with torch.inference_mode():
        with flop_counter.FlopCounterMode(display=False, custom_mapping=profiling.EXTRA_FLOP_FORMULAS) as counter:
            forward()
    counts = counter.get_flop_counts()
    total = sum(counts["Global"].values())
    names = (f"{type(model).__name__}.feature_extractor", type(model.feature_extractor).__name__)
    cnn = next((sum(counts[name].values()) for name in names if name in counts), 0)
    by_op = {str(op): n for op, n in counts["Global"].items()}
    linear = sum(n for op, n in by_op.items() if op in ("aten.addmm", "aten.mm"))
    attention = sum(n for op, n in by_op.items() if "bmm" in op or "scaled_dot_product" in op or "flash" in op)
    return {"CNN": cnn, "attention": attention, "Linear": linear, "other": total - cnn - attention - linear}


def limiting_phase(seconds: dict[str, float], flops: dict[str, int], peaks: dict[str, float]) -> str:
    """The phase that loses the most time against running at its peak, as a sentence.

    ``seconds``: time per phase; ``peaks``: GFLOP/s each phase could reach at best (the matmul
    peak of its precision).
    """
    total = sum(seconds.values())
    lost = {phase: seconds[phase] - flops.get(phase, 0) / (peaks[phase] * 1e9) for phase in PHASES}
    worst = max(lost, key=lost.get)
    if total <= 0 or lost[worst] <= 0:
        return "none: every phase ran at or above its peak"
    rate = flops.get(worst, 0) / seconds[worst] / 1e9
    return (f"{worst}: {seconds[worst] / total:.0%} of the time at {rate:.0f} GFLOP/s "
            f"(peak {peaks[worst]:.0f}; {lost[worst] / total:.0%} of the time lost there)")


def format_split_row(split: dict[str, float]) -> list[str]:
    """Milliseconds and shares of one split, in :data:`PHASES` order."""
    total = sum(split.values()) or float("nan")
    return [f"{split[p] * 1e3:.0f} ({split[p] / total:.0%})" for p in PHASES]
