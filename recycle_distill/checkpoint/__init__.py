"""Reading and writing student checkpoints safely (no pickled code is ever run)."""

from .compact import FORMAT_VERSION, read_compact, save_compact
from .loading import load_student, read_student_state_dict
from .safe_load import KNOWN_GLOBALS, CheckpointError, safe_torch_load

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "KNOWN_GLOBALS",
    "load_student",
    "read_compact",
    "read_student_state_dict",
    "safe_torch_load",
    "save_compact",
]
