"""``optimize_for_inference``: turn an existing student into a fast one, explicitly.

The plain blocks in :mod:`recycle_distill.students.blocks` have one code path each. A student
can be built with the fast ones directly (``build_student(..., blocks="fast")``); this module
converts one that exists: it swaps each block for its inference subclass (same parameters,
same state-dict keys; the subclass adds only a faster CPU forward and falls back to the plain
one under autograd or on other devices), then converts the precision
(:func:`convert_precision`, also what a student built fast needs). The swap table is
:data:`~recycle_distill.inference.blocks.table.FAST_BLOCKS`; torch's own
``nn.utils.parametrize`` changes a module's class the same way.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from recycle_distill.students.blocks.feature_extractor import ConvFeatureExtractor
from recycle_distill.inference.blocks.table import FAST_BLOCKS, PLAIN_BLOCKS
from recycle_distill.inference.precision import compute_dtype, parse_precision
from recycle_distill.util.options import check_bool

logger = logging.getLogger(__name__)

__all__ = ["optimize_for_inference", "convert_precision", "swap_blocks", "plain_blocks", "torch_int8_available",
           "quantize_linears_int8", "FAST_BLOCKS", "PLAIN_BLOCKS"]


def optimize_for_inference(
    model: nn.Module,
    dtype: Union[str, torch.dtype, None] = "fp32",
    *,
    fast_paths: bool = True,
    output_dtype: Union[str, torch.dtype, None] = "fp32",
    inplace: bool = False,
) -> nn.Module:
    """A copy of ``model`` (a student) set up for inference.

    Args:
        model: a :class:`~recycle_distill.students.StudentModel` (any family).
        dtype: ``fp32``; ``bf16`` (weights and activations in bfloat16, GroupNorm/LayerNorm
            statistics and softmax in float32); or ``int8`` (Linear layers dynamically
            quantized by torch, where this torch has it; the CNN front end in bf16; the
            rest fp32).
        fast_paths: swap in the CPU inference blocks (:data:`FAST_BLOCKS`).
        output_dtype: dtype of the returned tensors (``fp32`` by default whatever ``dtype``);
            inputs are cast to the compute dtype on the way in.
        inplace: change ``model`` itself instead of a copy.

    Returns:
        The model, in eval mode, with ``inference_precision`` set.
    """
    fast_paths, inplace = check_bool(fast_paths, "fast_paths"), check_bool(inplace, "inplace")
    precision, out_dtype = _parse_precisions(dtype, output_dtype)  # refused before any copy
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if fast_paths:
        swap_blocks(model, FAST_BLOCKS)
    return _convert(model, precision, out_dtype)


def convert_precision(
    model: nn.Module,
    dtype: Union[str, torch.dtype, None] = "fp32",
    *,
    output_dtype: Union[str, torch.dtype, None] = "fp32",
) -> nn.Module:
    """Convert ``model`` (a student, plain or fast blocks) to ``dtype`` in place, in eval mode.

    The precision half of :func:`optimize_for_inference` (see there for ``dtype`` and
    ``output_dtype``), for a student built with the fast blocks
    (``build_student(..., blocks="fast")``): its blocks are left as they are.

    Returns:
        ``model``, with ``inference_precision`` set.
    """
    precision, out_dtype = _parse_precisions(dtype, output_dtype)
    return _convert(model.eval(), precision, out_dtype)


def _convert(model: nn.Module, precision: str, out_dtype: torch.dtype) -> nn.Module:
    """Weights to ``precision`` and the input/output casts, in place (the model is in eval mode)."""
    if precision == "bf16":
        model.to(torch.bfloat16)
    elif precision == "int8":
        quantize_linears_int8(model)
        _cnn_in_bf16(model)
    _install_casts(model, compute_dtype(precision), out_dtype)
    model.inference_precision = precision
    return model


def _parse_precisions(dtype: Union[str, torch.dtype, None],
                      output_dtype: Union[str, torch.dtype, None]) -> tuple[str, torch.dtype]:
    """(precision name, output torch dtype), or the ValueError naming the option and the choices."""
    precision = parse_precision(dtype)
    return precision, compute_dtype(parse_precision(output_dtype, "output_dtype", ("fp32", "bf16")))


def swap_blocks(model: nn.Module, table: dict[type, type]) -> int:
    """Change the class of every module whose exact type is a key of ``table``; returns the count."""
    count = 0
    for module in model.modules():
        target = table.get(type(module))
        if target is not None:
            module.__class__ = target
            count += 1
    return count


def plain_blocks(model: nn.Module) -> nn.Module:
    """Undo the block swap of :func:`optimize_for_inference` in place (precision unchanged)."""
    swap_blocks(model, PLAIN_BLOCKS)
    return model


def torch_int8_available() -> tuple[bool, str]:
    """(available, why not): torch's dynamic quantization of Linear layers on this stack."""
    quantization = getattr(getattr(torch, "ao", None), "quantization", None)
    if quantization is None or not hasattr(quantization, "quantize_dynamic"):
        return False, (f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic; "
                       "use the ONNX Runtime int8 format (export --format onnx --dtype int8)")
    if "x86" not in torch.backends.quantized.supported_engines and \
            "fbgemm" not in torch.backends.quantized.supported_engines:
        return False, f"torch {torch.__version__} was built without an x86 quantized engine"
    return True, ""


def quantize_linears_int8(model: nn.Module) -> None:
    """Replace every ``nn.Linear`` by torch's dynamically quantized int8 Linear (in place)."""
    available, why = torch_int8_available()
    if not available:
        raise RuntimeError(f"dtype int8: {why}")
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it will move to torchao; it still works here.
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def _cnn_in_bf16(model: nn.Module) -> None:
    """Run the CNN front end in bf16 inside an int8 model (its output comes back float32).

    The CNN is about a third of a student's FLOPs and torch has no dynamic int8 convolution,
    so int8 Linears alone leave it at fp32 speed; bf16 runs it at the machine's bf16 rate.
    """
    for module in model.modules():
        if isinstance(module, ConvFeatureExtractor):
            module.to(torch.bfloat16)
            _install_casts(module, torch.bfloat16, torch.float32)


def _install_casts(model: nn.Module, compute: torch.dtype, output: torch.dtype) -> None:
    """Cast floating inputs to ``compute`` and floating outputs to ``output`` around forward."""
    for handle in getattr(model, "_inference_cast_handles", ()):
        handle.remove()

    def cast_inputs(module: nn.Module, args: tuple) -> tuple:
        return tuple(a.to(compute) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def cast_outputs(module: nn.Module, args: tuple, output_value: Any) -> Any:
        return _cast_floats(output_value, output)

    model._inference_cast_handles = (model.register_forward_pre_hook(cast_inputs),
                                     model.register_forward_hook(cast_outputs))


def _cast_floats(value: Any, dtype: torch.dtype, done: Optional[dict[int, Tensor]] = None) -> Any:
    """``value`` with every floating tensor (also inside lists and dataclasses) cast to ``dtype``.

    A tensor reachable twice (a family's ``hidden_states`` may be its ``projections``) is
    cast once.
    """
    done = {} if done is None else done
    if torch.is_tensor(value):
        if not value.is_floating_point() or value.dtype == dtype:
            return value
        if id(value) not in done:
            done[id(value)] = value.to(dtype)
        return done[id(value)]
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_floats(v, dtype, done) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            setattr(value, name, _cast_floats(getattr(value, name), dtype, done))
    return value
