"""The inference CIF as an ONNX graph can hold it: loop-free, and with shapes that follow the input.

:func:`recycle_distill.downstreams.cif_asr.cif.continuous_integrate_and_fire` (inference mode:
every utterance gets its tail, ``legacy_tail=False``) takes its firing counts from a cumulative
minimum (``torch.cummin``) and sizes its output by the largest firing count (``.item()``). ONNX
has no cumulative minimum, and a traced ``.item()`` would freeze the example's count. So:

* the firing counts are cif.py's own ``_firing_counts`` (one rule, stated once), and while a
  graph is traced :func:`cummin_as_scan` exports ``torch.cummin`` as a Hillis-Steele scan
  unrolled :data:`SCAN_STEPS` times (``x = min(x, x shifted by 2^k)``): no loop in the graph, up
  to ``2**SCAN_STEPS`` frames (a shift beyond the length changes nothing);
* :func:`static_inference_cif` assembles the vectors with a fixed ``T + 2`` rows (``T`` frames,
  the tail step, the open integration: a frame fires at most once), zero after each utterance's
  firings; the caller slices to ``max(fired_lengths)``. A one-hot (B, rows, T) share matrix
  times the frames replaces cif.py's two ``index_add`` calls.

``tests/recognizer/test_onnx_export.py`` checks both against the PyTorch CIF.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F

from recycle_distill.downstreams.cif_asr.cif import _TAIL_EPS, _as_float32, _firing_counts

__all__ = ["SCAN_STEPS", "cummin_as_scan", "static_inference_cif"]

SCAN_STEPS = 24  # 2**24 frames: 15 days of audio at 80 ms
# Above any value the scan sees (a firing count minus a frame index): what a shift brings in.
_NO_MINIMUM = 2**62


def _cummin_symbolic(g, values, dim):
    """ONNX nodes for ``torch.cummin(values, dim)`` on an int64 tensor: (minima, minima).

    The second output stands in for the indices, which the CIF never reads (same dtype).
    """
    from torch.onnx import symbolic_helper

    axis = symbolic_helper._get_const(dim, "i", "dim")
    rank = symbolic_helper._get_tensor_rank(values)
    if rank is None or axis < 0:
        axis = axis if axis >= 0 else axis + (rank or 0)
    length = g.op("Slice", g.op("Shape", values), g.op("Constant", value_t=torch.tensor([axis])),
                  g.op("Constant", value_t=torch.tensor([axis + 1])))  # (1,) the scanned length
    zero = g.op("Constant", value_t=torch.tensor([0]))
    axes = g.op("Constant", value_t=torch.tensor([axis]))
    fill = g.op("Constant", value_t=torch.tensor(_NO_MINIMUM, dtype=torch.int64))
    for step in range(SCAN_STEPS):
        pads = [0] * (2 * rank)
        pads[axis] = 2**step  # before the axis: x[t - shift], the first shift entries filled
        padded = g.op("Pad", values, g.op("Constant", value_t=torch.tensor(pads)), fill)
        values = g.op("Min", values, g.op("Slice", padded, zero, length, axes))
    return values, values


@contextlib.contextmanager
def cummin_as_scan(opset: int) -> Iterator[None]:
    """While inside, ``torch.onnx.export`` writes ``torch.cummin`` as the unrolled scan."""
    torch.onnx.register_custom_op_symbolic("aten::cummin", _cummin_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::cummin", opset)


def static_inference_cif(hidden: torch.Tensor, alpha: torch.Tensor, padding_mask: torch.Tensor,
                         threshold: float, tail_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference CIF with a tail for every utterance, its output padded to a fixed size.

    Args:
        hidden: (B, T, C) encoder output.
        alpha: (B, T) weights, zero on padding.
        padding_mask: (B, T) bool, True = padded.
        threshold, tail_threshold: as in ``continuous_integrate_and_fire``.

    Returns:
        (fired (B, T + 2, C): the integrated vectors, zero rows after each utterance's
        firings; fired_lengths (B,) int64: firings, at least 1 (an utterance that fires nothing
        has one zero row)).
    """
    # The tail step: one padded frame (hidden 0, weight 0) after every utterance.
    hidden = F.pad(hidden, (0, 0, 0, 1))
    alpha = F.pad(alpha, (0, 1))
    padding_mask = F.pad(padding_mask, (0, 1), value=True)
    frames = alpha.shape[1]
    # Frames up to and including the first padded one are processed (there always is one).
    last_frame = (~padding_mask).sum(dim=1)  # (B,)
    frame_index = torch.arange(frames, device=alpha.device)
    processed = frame_index.unsqueeze(0) <= last_frame.unsqueeze(1)

    weights = alpha.to(torch.float64)
    cumulative = torch.cumsum(weights, dim=1)
    fires = _firing_counts(cumulative, _as_float32(threshold))
    previous_fires = F.pad(fires, (1, 0))[:, :-1]
    previous_cumulative = F.pad(cumulative, (1, 0))[:, :-1]
    fired_here = fires > previous_fires
    completing = torch.where(fired_here, fires.to(torch.float64) - previous_cumulative, weights) * processed
    starting = torch.where(fired_here, weights - completing, torch.zeros_like(weights)) * processed

    counts = fires.gather(1, last_frame.unsqueeze(1))  # (B, 1) firings up to the last processed frame
    row_index = torch.arange(frames + 1, device=alpha.device).unsqueeze(0)  # (1, rows)
    rows = row_index.unsqueeze(-1)  # (1, rows, 1)
    # (B, rows, T): the part of frame t in row r; a frame feeds the row it completes and the next.
    share = ((previous_fires.unsqueeze(1) == rows).to(hidden.dtype) * completing.to(hidden.dtype).unsqueeze(1)
             + (fires.unsqueeze(1) == rows).to(hidden.dtype) * starting.to(hidden.dtype).unsqueeze(1))
    integrated = torch.matmul(share, hidden)  # (B, rows, C)

    leftover = cumulative.gather(1, last_frame.unsqueeze(1)) - counts.to(torch.float64)  # (B, 1)
    # The tail rule of continuous_integrate_and_fire: the float32 leftover above the float32 threshold.
    emit = leftover.to(torch.float32) > _as_float32(tail_threshold)
    scale = torch.where(emit, 1.0 / (leftover + _TAIL_EPS), torch.zeros_like(leftover)).to(hidden.dtype)
    # Closed integrations kept, the open one (row ``counts``) rescaled to unit weight or dropped.
    keep = (row_index < counts).to(hidden.dtype) + (row_index == counts).to(hidden.dtype) * scale
    num_fires = counts + emit.to(torch.int64)  # (B, 1)
    valid = (row_index < num_fires).to(hidden.dtype)
    fired = integrated * (keep * valid).unsqueeze(-1)
    return fired, num_fires.squeeze(1).clamp(min=1)
