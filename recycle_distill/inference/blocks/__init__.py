"""The fast CPU inference blocks: subclasses of the plain student blocks, and their table.

Layer ``inference.blocks``: may import util, families, ``students.config`` and
``students.blocks`` (the plain blocks it extends), and nothing above. The students build with
these blocks when asked (``build_student(..., blocks="fast")``), which is why they sit below
``students``; the rest of ``inference`` (conversion, precisions, ONNX) sits above it.

``conv_runner`` and ``derived`` know no student module, so the teacher imports the CNN
runner alone. This ``__init__`` imports nothing: the table is :mod:`.table`.
"""
