"""S3PRL / torch.hub entries for FitHuBERT: `-u fithubert -k CKPT [-g CONFIG.yaml]`.

CKPT is a released Lightning checkpoint (with its architecture YAML as -g, or without when
the weights match a preset), a plain state dict, or our compact .safetensors file; a URL or
`hf://owner/repo/file` is downloaded first. Keyword options such as
`reference_batched_reuse=True` or `per_utterance_cnn=True` reach the model config.
"""

from recycle_distill.hub_entries import load_upstream as _load_upstream


def fithubert_local(ckpt, model_config=None, *args, **kwargs):
    """FitHuBERT from a local checkpoint file."""
    return _load_upstream("fithubert", ckpt, model_config, **kwargs)


def fithubert_url(ckpt, model_config=None, refresh=False, *args, **kwargs):
    """FitHuBERT from a URL (cached; `refresh=True` downloads again)."""
    return _load_upstream("fithubert", ckpt, model_config, refresh, **kwargs)


def fithubert(ckpt=None, model_config=None, refresh=False, *args, **kwargs):
    """FitHuBERT from a path or URL."""
    return _load_upstream("fithubert", ckpt, model_config, refresh, default_release=None, **kwargs)
