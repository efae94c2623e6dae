"""The S3PRL side: the upstream wrapper (``upstream.StudentUpstream``) and the hub entries
(``hub_entries``) behind every ``upstreams/<family>`` folder (installed as
``recycle_distill.upstreams``, and counted in this wing), the torchaudio compatibility shim
(``compat``), the SUPERB launcher and scorer (``superb/``), the ``patch_hub.py`` internals
(``patch/``, standard library and PyYAML only) and the shipped downstream configs.

Layer ``s3prl``: may import util, families, students.config, students.blocks, inference.blocks,
students, inference, checkpoint, hf_export and downstreams; never training, lab or cli. This
``__init__`` imports nothing, so ``patch/`` loads without torch.
"""
