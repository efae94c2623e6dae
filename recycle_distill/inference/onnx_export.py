"""Export a student to ONNX: ``waveforms`` (B, S) + ``lengths`` (B,) in, the S3PRL features out.

Graph contract (export format version :data:`ONNX_FORMAT_VERSION`):

* inputs ``waveforms`` (B, S) float32 and ``lengths`` (B,) int64 valid samples per row; B and S
  are dynamic (right-pad a batch, as :func:`recycle_distill.students.blocks.masks.pad_waveforms` does);
* outputs ``hidden_states`` (N, B, T, D) float32 (the N states the S3PRL upstream exposes,
  stacked), ``last_hidden_state`` (B, T, D) and ``padding_mask`` (B, T) bool, True = padding
  (all False when nothing is padded);
* ``metadata_props`` carry ``recycle_distill.*`` keys (family, format version, layers, dims,
  rates, dtype) that :class:`recycle_distill.inference.onnx_runtime.OnnxStudentUpstream` checks,
  and, for a student trained here, ``recycle_distill.provenance`` (its training record, JSON).

Exporter: the TorchScript-based tracer, ``torch.onnx.export(..., dynamo=False)``. It exists,
with the same signature, on both supported stacks (torch 2.8 and torch 2.13, where it is
deprecated but present) and exports every family in ~1-2 s. The torch.export-based
("dynamo") exporter fails on torch 2.8 for these models (its symbolic-shape solver cannot
prove the guards the conv length arithmetic creates, e.g. ``max(1, T) * max(1, T) == T * T``)
and takes ~10 s per tiny model on 2.13. Tracing records shape arithmetic done on tensor
sizes, but a Python ``if`` on a shape is frozen at the example's value: the model's code
therefore keeps such decisions branch-free, and the tests export at one length and run
others (batch 1 and 3, 1 s to 6 s) to prove it.

The exported copy is rebuilt from the model's config and state dict (the plain blocks, fp32),
so neither the caller's model nor any ``optimize_for_inference`` swap on it is touched or
traced. Weight norm is folded: the positional conv's ``weight_g``/``weight_v`` become one
constant Conv weight in the graph. ``dtype="int8"`` applies ONNX Runtime's dynamic
quantization (int8 weights with per-output-channel scales, uint8 activations quantized at run
time) to the MatMul/Gemm nodes; the convolutions stay fp32 (see :data:`INT8_OP_TYPES`). bf16 is
refused: ONNX Runtime's CPU provider has no bfloat16 MatMul kernel. Two config options are
refused because their amounts are Python decisions a trace would freeze: ``per_utterance_cnn``
and ``required_seq_len_multiple``/``crop_seq_to_multiple`` other than 1 (no released student
uses them).

Long inputs: the graph is the plain blocks', so ARMHuBERT's full layers form their (B, H, T, T)
maps and hand them to the reuse layers (the map-free recomputation of
:mod:`recycle_distill.students.blocks.map_free` is a Python loop over row blocks, which a trace
would unroll at the example length). ONNX Runtime then holds about four such float32 maps at
once (measured on the tiny ARMHuBERT at 20 s and 40 s): memory quadratic in length, ~1.7 GB at
60 s for the ARMHuBERT size. Longer recordings go through the graph in chunks
(:func:`recycle_distill.inference.chunked.run_chunked_batch`; docs/inference.md §7).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import time
import warnings
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from recycle_distill.inference.onnx_checks import INSTALL_HINT, import_onnx_package  # noqa: F401  (re-exported)
from recycle_distill.util.atomic import atomic_write, check_output_file
from recycle_distill.util.messages import short_repr
from recycle_distill.util.sample_rate import SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = [
    "export_onnx", "check_onnx_dtype", "require_onnx", "import_onnx_package", "ONNX_DTYPES", "ONNX_FORMAT_VERSION", "META_PREFIX",
    "INPUT_NAMES", "OUTPUT_NAMES", "INT8_OP_TYPES", "INSTALL_HINT",
]

ONNX_FORMAT_VERSION = 1  # bump when inputs, outputs or metadata change meaning
META_PREFIX = "recycle_distill."
ONNX_DTYPES = ("fp32", "int8")
DEFAULT_OPSET = 17  # LayerNormalization is one ONNX op from 17 on (ONNX Runtime fuses it)
INPUT_NAMES = ("waveforms", "lengths")
OUTPUT_NAMES = ("hidden_states", "last_hidden_state", "padding_mask")
# Measured on the ARMHuBERT / STaRHuBERT presets (random init, 10 s espeak speech, 2 threads):
# MatMul/Gemm only: worst-layer relative L2 error 0.015 / 0.011, 1.25x / 1.7x faster than ORT
# fp32. Quantizing Conv too: error 0.197 / 0.186 (the CNN's and positional conv's errors feed
# every layer) and about 2x SLOWER than fp32 (ORT's ConvInteger path). So MatMul/Gemm only.
INT8_OP_TYPES = ("MatMul", "Gemm")

PathLike = Union[str, "os.PathLike[str]"]


def require_onnx(dtype: str = "fp32") -> None:
    """Import what an export at ``dtype`` needs (onnx; for int8 also onnxruntime's quantizer),
    or raise :func:`import_onnx_package`'s ImportError."""
    for name in ("onnx", "onnxruntime") if dtype == "int8" else ("onnx",):
        import_onnx_package(name)


def check_onnx_dtype(dtype: Union[str, torch.dtype, None]) -> str:
    """The canonical name of ``dtype`` (``fp32``, ``int8``; aliases such as ``float32`` accepted)
    if ONNX export supports it, else a ValueError naming the option and the choices."""
    from recycle_distill.inference.precision import parse_precision

    try:
        dtype = parse_precision(dtype, "dtype")
    except ValueError:
        pass  # an unknown name: refused below with the ONNX choices
    if dtype == "bf16":
        raise ValueError(
            f"dtype 'bf16' is not supported for ONNX: ONNX Runtime's CPU provider has no bfloat16 MatMul "
            f"kernel; choose one of {', '.join(ONNX_DTYPES)}"
        )
    if dtype not in ONNX_DTYPES:
        raise ValueError(f"unknown dtype {short_repr(dtype)} for ONNX; choose one of {', '.join(ONNX_DTYPES)}")
    return dtype


class _GraphWrapper(nn.Module):
    """The student as the ONNX graph sees it: tensors in, the three named outputs out."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, S) float, (B,) int64 -> (N, B, T, D), (B, T, D), (B, T) bool."""
        output = self.student(waveforms, lengths)
        return torch.stack(output.hidden_states), output.hidden_states[-1], output.padding_mask


def _plain_fp32_copy(model: nn.Module, family: str) -> nn.Module:
    """A fresh plain student with ``model``'s weights in float32, in eval mode.

    Rebuilt from the config (not deep-copied) so fast-path module swaps on ``model`` never
    reach the graph; their state-dict keys are the plain ones by design.
    """
    from recycle_distill.students.build import build_student

    config = getattr(model, "config", None)
    if getattr(model, "inference_precision", "fp32") == "int8":
        raise ValueError("export_onnx: this model's Linears are torch-quantized (int8); export the fp32 or bf16 "
                         "model and pass dtype='int8' for ONNX Runtime's own int8")
    if config is None:
        raise ValueError(f"export_onnx needs one of our students (with .config), got {type(model).__name__}")
    model_family = getattr(model, "family", family)
    if model_family != family:
        raise ValueError(f"export_onnx: family {short_repr(family)} does not match the model's family "
                         f"{short_repr(model_family)}")
    if config.per_utterance_cnn:
        raise ValueError(
            "export_onnx: per_utterance_cnn loops over the batch by its lengths, which a traced graph cannot "
            "follow; export with per_utterance_cnn=False"
        )
    if config.required_seq_len_multiple != 1 or config.crop_seq_to_multiple != 1:
        # Their pad/crop amounts are Python decisions on the traced length (no released student uses them).
        raise ValueError(
            f"export_onnx: required_seq_len_multiple={config.required_seq_len_multiple} and "
            f"crop_seq_to_multiple={config.crop_seq_to_multiple} are not exportable; only 1 is (as in every "
            f"released student)"
        )
    state = {key: value.detach().float() if value.is_floating_point() else value
             for key, value in model.state_dict().items()}
    plain = build_student(copy.deepcopy(config), family)
    plain.load_state_dict(state)
    plain = plain.float().eval()
    # A mask even when nothing is padded: the graph has one output signature, and no
    # data-dependent "is anything padded?" test is traced.
    plain.always_builds_padding_mask = True
    _fold_weight_norm(plain)
    return plain


def _fold_weight_norm(model: nn.Module) -> None:
    """Swap every weight-normalised conv for a plain ``nn.Conv1d`` holding ``g * v / ||v||``."""
    from recycle_distill.students.blocks.positional import WeightNormConv1d

    for name, module in list(model.named_modules()):
        if not isinstance(module, WeightNormConv1d):
            continue
        with torch.no_grad():
            weight = module.weight().detach().clone()
        out_channels, in_per_group, kernel = weight.shape
        conv = nn.Conv1d(in_per_group * module.groups, out_channels, kernel, padding=module.padding,
                         groups=module.groups)
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(module.bias.detach())
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, conv)


def _example_inputs(model: nn.Module, seconds: float) -> tuple[Tensor, Tensor]:
    """A padded batch of two (the second 3/4 long) so batch and padding are traced generally."""
    samples = max(int(seconds * SAMPLE_RATE), 2 * model.receptive_field)
    generator = torch.Generator().manual_seed(0)
    waveforms = torch.randn(2, samples, generator=generator) * 0.1
    lengths = torch.tensor([samples, samples * 3 // 4], dtype=torch.long)
    waveforms[1, lengths[1]:] = 0.0
    return waveforms, lengths


def _metadata(model: nn.Module, family: str, dtype: str, opset: int) -> dict[str, str]:
    from recycle_distill.util.version import VERSION

    config = model.config
    return {
        "family": family,
        "onnx_version": str(ONNX_FORMAT_VERSION),
        "num_layers": str(config.encoder_layers),
        "hidden_dim": str(_hidden_dim(model)),
        "downsample_rate": str(model.downsample_rate),
        "receptive_field": str(model.receptive_field),
        "sample_rate": str(SAMPLE_RATE),
        "dtype": dtype,
        "opset": str(opset),
        "package_version": VERSION,
    }


def _hidden_dim(model: nn.Module) -> int:
    """D of ``hidden_states`` (the head width for families that expose head projections)."""
    with torch.no_grad():
        waveforms = torch.zeros(1, model.receptive_field * 4)
        return int(model(waveforms).hidden_states[0].shape[-1])


def _write_metadata(path: str, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(path)
    kept = [prop for prop in proto.metadata_props if not prop.key.startswith(META_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.add(key=META_PREFIX + key, value=value)
    onnx.save(proto, path)


def _trace_to(wrapper: nn.Module, example: tuple[Tensor, Tensor], path: str, opset: int) -> None:
    dynamic_axes = {
        "waveforms": {0: "batch", 1: "samples"},
        "lengths": {0: "batch"},
        "hidden_states": {1: "batch", 2: "frames"},
        "last_hidden_state": {0: "batch", 1: "frames"},
        "padding_mask": {0: "batch", 1: "frames"},
    }
    with warnings.catch_warnings():
        # The tracer warns about every shape-to-int conversion and (torch >= 2.9) about being
        # the legacy exporter; the parity tests are what prove the graph general.
        warnings.simplefilter("ignore")
        with torch.no_grad():  # the plain blocks have one path; no autograd graph is needed
            torch.onnx.export(
                wrapper, example, path, dynamo=False, input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes, opset_version=opset,
                do_constant_folding=True,
            )


class _DropQuantizerChatter(logging.Filter):
    """ONNX Runtime's quantizer logs a line per skipped tensor on the root logger; keep ours readable."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "/onnxruntime/quantization/" not in record.pathname.replace(os.sep, "/")


def _quantize_int8(source: str, target: str, exclude: tuple[str, ...] | list[str] = ()) -> None:
    """Dynamic int8 quantization of ``source``'s :data:`INT8_OP_TYPES` nodes (but those named in
    ``exclude``) into ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root, chatter = logging.getLogger(), _DropQuantizerChatter()
    root.addFilter(chatter)
    try:
        quantize_dynamic(source, target, op_types_to_quantize=list(INT8_OP_TYPES), per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude))
    finally:
        root.removeFilter(chatter)


def export_onnx(
    model: nn.Module,
    path: PathLike,
    *,
    family: str,
    dtype: Union[str, torch.dtype, None] = "fp32",
    opset: Optional[int] = None,
    example_seconds: float = 2.0,
    provenance: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Write ``model`` as an ONNX file (see the module docstring for the graph's contract).

    Args:
        model: a student (any dtype, plain or optimised for inference); it is not modified.
        path: the ``.onnx`` file, written atomically (a failure leaves no partial file and an
            earlier file as it was); anything there but a regular file (a device, a FIFO, a
            folder) is refused with :class:`recycle_distill.util.atomic.OutputError` before tracing.
        family: the student family, stored in the metadata and checked against the model.
        dtype: ``fp32`` or ``int8`` (ONNX Runtime dynamic quantization of MatMul/Gemm).
        opset: ONNX opset (default :data:`DEFAULT_OPSET`).
        example_seconds: length of the traced example (any length runs afterwards).
        provenance: the training record of a student trained here (teacher, data, objective,
            steps, precision), stored as JSON in the metadata key ``recycle_distill.provenance``.

    Returns:
        Info: ``path``, ``family``, ``dtype``, ``opset``, ``exporter``, ``seconds`` (wall time),
        ``bytes`` (file size) and ``metadata`` (without the prefix).
    """
    dtype = check_onnx_dtype(dtype)
    require_onnx(dtype)
    check_output_file(path)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    started = time.perf_counter()
    plain = _plain_fp32_copy(model, family)
    metadata = _metadata(plain, family, dtype, opset)
    if provenance:
        metadata["provenance"] = json.dumps(dict(provenance), sort_keys=True)
    wrapper = _GraphWrapper(plain).eval()
    example = _example_inputs(plain, example_seconds)

    def write(temp_path: str) -> None:
        if dtype == "fp32":
            _trace_to(wrapper, example, temp_path, opset)
        else:
            with tempfile.TemporaryDirectory(dir=os.path.dirname(temp_path)) as folder:
                fp32_path = os.path.join(folder, "fp32.onnx")
                _trace_to(wrapper, example, fp32_path, opset)
                _quantize_int8(fp32_path, temp_path)
        _write_metadata(temp_path, metadata)

    atomic_write(path, write, suffix=".onnx")
    seconds = time.perf_counter() - started
    logger.info("exported %s (%s, %s) in %.1f s", os.fspath(path), family, dtype, seconds)
    return {
        "path": os.fspath(path), "family": family, "dtype": dtype, "opset": opset,
        "exporter": "torch.onnx.export(dynamo=False)", "seconds": seconds,
        "bytes": os.path.getsize(path), "metadata": metadata,
    }
