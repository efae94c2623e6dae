"""The inference wing: fast CPU blocks, precisions, conversion and ONNX.

* :mod:`.blocks`: the fast block subclasses and their table ``FAST_BLOCKS`` (layer
  ``inference.blocks``, below ``students``: the students build with them when asked,
  ``build_student(..., blocks="fast")``).
* :mod:`.optimize`: ``optimize_for_inference(model, dtype="bf16")`` converts an existing
  student (block swap, then precision); ``convert_precision`` is the precision half, for a
  student built with the fast blocks. :mod:`.precision`: the ``fp32 | bf16 | int8`` names.
* :mod:`.onnx_export`, :mod:`.onnx_runtime`: ONNX export and the ONNX Runtime runner.

Layer ``inference`` (everything here but :mod:`.blocks`) may import util, families,
students.config, students.blocks, inference.blocks and students; never checkpoint or anything
above it. Names are imported on first use, so the teacher can take :mod:`.blocks.conv_runner`
without the students.
"""

from recycle_distill.util.lazy import lazy_attributes

_LAZY = {
    "FAST_BLOCKS": ".blocks.table",
    "convert_precision": ".optimize",
    "optimize_for_inference": ".optimize",
    "plain_blocks": ".optimize",
    "torch_int8_available": ".optimize",
    "PRECISIONS": ".precision",
    "compute_dtype": ".precision",
    "parse_precision": ".precision",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
