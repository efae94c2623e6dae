"""S3PRL / torch.hub entries for MaskHuBERT: `-u maskhubert -k CKPT [-g CONFIG.yaml]`.

CKPT is a released Lightning checkpoint (with its architecture YAML as -g, or without when
the weights match a preset), a plain state dict, or our compact .safetensors file; a URL or
`hf://owner/repo/file` is downloaded first. Keyword options such as
`reference_batched_reuse=True` or `per_utterance_cnn=True` reach the model config.
"""

from recycle_distill.hub_entries import load_released as _load_released
from recycle_distill.hub_entries import load_upstream as _load_upstream


def maskhubert_local(ckpt, model_config=None, *args, **kwargs):
    """MaskHuBERT from a local checkpoint file."""
    return _load_upstream("maskhubert", ckpt, model_config, **kwargs)


def maskhubert_url(ckpt, model_config=None, refresh=False, *args, **kwargs):
    """MaskHuBERT from a URL (cached; `refresh=True` downloads again)."""
    return _load_upstream("maskhubert", ckpt, model_config, refresh, **kwargs)


def maskhubert(ckpt=None, model_config=None, refresh=False, *args, **kwargs):
    """MaskHuBERT from a path or URL; without one, the published maskhubert_960h checkpoint."""
    return _load_upstream("maskhubert", ckpt, model_config, refresh, default_release="maskhubert_960h", **kwargs)


def maskhubert_960h(refresh=False, *args, **kwargs):
    """MaskHuBERT distilled from HuBERT Base on LibriSpeech 960h (26.64M)."""
    return _load_released("maskhubert_960h", refresh=refresh, **kwargs)
