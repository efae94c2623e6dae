"""The inference layer: fast CPU blocks and precisions, applied by an explicit call.

``optimize_for_inference(model, dtype="bf16")`` swaps the plain blocks of
:mod:`recycle_distill.students.blocks` for their inference subclasses and converts the precision;
hub entries, the S3PRL upstream, the profiler and the benchmarks apply it by default
(``optimize=False`` turns it off). ONNX export and the ONNX Runtime runner live here too.

Names are imported on first use, so the teacher can take :mod:`.cnn` without the students.
"""

from recycle_distill.util.lazy import lazy_attributes

_LAZY = {
    "FAST_BLOCKS": ".optimize",
    "optimize_for_inference": ".optimize",
    "plain_blocks": ".optimize",
    "torch_int8_available": ".optimize",
    "PRECISIONS": ".precision",
    "compute_dtype": ".precision",
    "parse_precision": ".precision",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
