"""S3PRL / torch.hub entries for FitHuBERT: `-u fithubert -k CKPT [-g CONFIG.yaml]`.

CKPT is a released Lightning checkpoint (with its architecture YAML as -g, or without when
the weights match a preset), a plain state dict, or our compact .safetensors file; a URL or
`hf://owner/repo/file` is downloaded first. Keyword options such as
`reference_batched_reuse=True` or `per_utterance_cnn=True` reach the model config.

The entries (fithubert_local, fithubert_url, fithubert and one per published checkpoint) are generated
from recycle_distill.checkpoint.fetch.RELEASED by recycle_distill.s3prl.hub_entries.family_entries.
"""

from recycle_distill.s3prl.hub_entries import family_entries as _family_entries

globals().update(_family_entries("fithubert", __name__))
