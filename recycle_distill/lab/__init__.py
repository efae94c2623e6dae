"""Measuring tools, kept apart from what users import: the profiler (``profiling``, behind
``recycle-distill profile``), analysis (``analysis/``: representation similarity, k-means,
precision errors) and the end-to-end demo (``demo/``).

Layer ``lab``: may import util, families, students.config, students.blocks, inference.blocks,
students, inference, checkpoint, hf_export, downstreams, s3prl, recognizer and training; only cli sits above.
"""
