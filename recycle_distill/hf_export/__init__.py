"""Students as Hugging Face ``transformers`` models: export a folder, read it back.

MaskHuBERT and STaRHuBERT become a plain ``HubertModel``; ARMHuBERT and FitHuBERT ship
generated ``configuration_*.py`` / ``modeling_*.py`` (``trust_remote_code=True``). See
:mod:`recycle_distill.hf_export.folder` for the layout.
"""

from recycle_distill.hf_export.folder import HF_FORMAT_VERSION, export_hf, is_hf_export, read_hf_student
from recycle_distill.hf_export.hubert_format import HEADS_FILE, apply_projection_heads
from recycle_distill.hf_export.model_card import read_card_metadata

__all__ = ["HF_FORMAT_VERSION", "HEADS_FILE", "apply_projection_heads", "export_hf", "is_hf_export",
           "read_card_metadata", "read_hf_student"]
