"""The CIF recognizer outside S3PRL: rebuild a trained ``cif_asr`` experiment (upstream,
featurizer, recognizer, vocabulary) and transcribe recordings with token times (PyTorch), export
it as ONNX graphs with a runner that needs only ONNX Runtime and NumPy, and average checkpoints.

Layer ``recognizer``: may import util, families, students.config, students.blocks,
inference.blocks, students, inference, checkpoint, hf_export, downstreams and s3prl; never
training, lab or cli. ``transcript`` and the ONNX runner import neither torch nor this wing's
torch modules, so an exported recognizer runs where torch is not installed.
"""

from recycle_distill.util.lazy import lazy_attributes

# Public name -> module; imported on first use, so `import recycle_distill.recognizer` stays torch-free.
_LAZY = {
    "Recognizer": ".torch_recognizer",
    "Transcript": ".transcript",
    "TokenTime": ".transcript",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
