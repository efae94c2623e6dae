"""Students as Hugging Face ``transformers`` folders: the writer, its configs and its model card.

MaskHuBERT and STaRHuBERT become a plain ``HubertModel``; ARMHuBERT and FitHuBERT ship
generated ``configuration_*.py`` / ``modeling_*.py`` (``trust_remote_code=True``). See
:mod:`recycle_distill.hf_export.export` for the layout. Reading such a folder back is the
checkpoint wing's job (:mod:`recycle_distill.checkpoint.hf_folder`), which this wing does not
import the other way round.

Layer ``hf_export``: may import util, families, students.config, students.blocks,
inference.blocks, students, inference and checkpoint; never downstreams or anything above.
"""

from recycle_distill.hf_export.export import export_hf
from recycle_distill.hf_export.model_card import read_card_metadata

__all__ = ["export_hf", "read_card_metadata"]
