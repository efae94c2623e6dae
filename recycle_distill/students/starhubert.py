"""STaRHuBERT: a student distilled by temporal relations; no heads, no mask embedding."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from recycle_distill.students.config import StudentConfig
from recycle_distill.students.model import StudentModel


class STaRHuBERT(StudentModel):
    """Full-attention student whose S3PRL features are the layer outputs themselves."""

    family = "starhubert"
    has_mask_embedding = False
    always_builds_padding_mask = True

    def build_heads(self, config: StudentConfig) -> Optional[nn.ModuleList]:
        return None

    def select_hidden_states(self, layer_results: list[Tensor], projections: Optional[list[Tensor]]) -> list[Tensor]:
        return layer_results
