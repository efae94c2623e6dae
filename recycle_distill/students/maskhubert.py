"""MaskHuBERT: the plain student (full attention everywhere, a head per layer)."""

from __future__ import annotations

from recycle_distill.students.model import StudentModel


class MaskHuBERT(StudentModel):
    """Full-attention post-LN student with ``mask_emb`` and N projection heads.

    Everything is the shared :class:`StudentModel`; this class only names the family.
    """

    family = "maskhubert"
