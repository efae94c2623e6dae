"""Reading and writing student checkpoints safely (no pickled code is ever run).

``safe_load`` and ``zip_records`` are leaves (torch only): importing
``recycle_distill.checkpoint.safe_load`` (as the teacher code does) does not build the student
stack. The names below are imported on first access (PEP 562), for the same reason.

Layer ``checkpoint``: may import util, families, students.config, students.blocks,
inference.blocks, students and inference; never hf_export or anything above. Reading every
format (compact, Lightning, state dicts, Hugging Face folders) lives here, so hf_export only
writes.
"""

from __future__ import annotations

from recycle_distill.util.lazy import lazy_attributes

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "KNOWN_GLOBALS",
    "load_student",
    "read_compact",
    "read_provenance",
    "read_student_state_dict",
    "safe_torch_load",
    "save_compact",
]

_LAZY = {
    "CheckpointError": ".safe_load",
    "KNOWN_GLOBALS": ".safe_load",
    "safe_torch_load": ".safe_load",
    "FORMAT_VERSION": ".compact",
    "read_compact": ".compact",
    "read_provenance": ".provenance",
    "save_compact": ".compact",
    "load_student": ".loading",
    "read_student_state_dict": ".loading",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
