"""S3PRL / torch.hub entries for STaRHuBERT: `-u starhubert -k CKPT [-g CONFIG.yaml]`.

CKPT is a released Lightning checkpoint (with its architecture YAML as -g, or without when
the weights match a preset), a plain state dict, or our compact .safetensors file; a URL or
`hf://owner/repo/file` is downloaded first. Keyword options such as
`reference_batched_reuse=True` or `per_utterance_cnn=True` reach the model config.
"""

from recycle_distill.hub_entries import load_upstream as _load_upstream


def starhubert_local(ckpt, model_config=None, *args, **kwargs):
    """STaRHuBERT from a local checkpoint file."""
    return _load_upstream("starhubert", ckpt, model_config, **kwargs)


def starhubert_url(ckpt, model_config=None, refresh=False, *args, **kwargs):
    """STaRHuBERT from a URL (cached; `refresh=True` downloads again)."""
    return _load_upstream("starhubert", ckpt, model_config, refresh, **kwargs)


def starhubert(ckpt=None, model_config=None, refresh=False, *args, **kwargs):
    """STaRHuBERT from a path or URL."""
    return _load_upstream("starhubert", ckpt, model_config, refresh, default_release=None, **kwargs)
