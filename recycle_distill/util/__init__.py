"""Small helpers every wing shares: atomic writes, bounded YAML, literal parsing, value
coercion and config checks, checks of API options, bounded messages, lazy names, the sample rate,
the version.

Layer ``util``, the lowest: it may import nothing of recycle_distill; its modules use the
standard library (and PyYAML), so torch-free code such as ``patch_hub.py`` can take them.
"""
