"""S3PRL / torch.hub entries for ARMHuBERT: `-u armhubert -k CKPT [-g CONFIG.yaml]`.

CKPT is a released Lightning checkpoint (with its architecture YAML as -g, or without when
the weights match a preset), a plain state dict, or our compact .safetensors file; a URL or
`hf://owner/repo/file` is downloaded first. Keyword options such as
`reference_batched_reuse=True` or `per_utterance_cnn=True` reach the model config.
"""

from recycle_distill.hub_entries import load_released as _load_released
from recycle_distill.hub_entries import load_upstream as _load_upstream


def armhubert_local(ckpt, model_config=None, *args, **kwargs):
    """ARMHuBERT from a local checkpoint file."""
    return _load_upstream("armhubert", ckpt, model_config, **kwargs)


def armhubert_url(ckpt, model_config=None, refresh=False, *args, **kwargs):
    """ARMHuBERT from a URL (cached; `refresh=True` downloads again)."""
    return _load_upstream("armhubert", ckpt, model_config, refresh, **kwargs)


def armhubert(ckpt=None, model_config=None, refresh=False, *args, **kwargs):
    """ARMHuBERT from a path or URL; without one, the published armhubert_960h checkpoint."""
    return _load_upstream("armhubert", ckpt, model_config, refresh, default_release="armhubert_960h", **kwargs)


def armhubert_960h(refresh=False, *args, **kwargs):
    """ARMHuBERT distilled from HuBERT Base on LibriSpeech 960h (26.45M)."""
    return _load_released("armhubert_960h", refresh=refresh, **kwargs)


def armhubert_s_100h(refresh=False, *args, **kwargs):
    """ARMHuBERT-S distilled on LibriSpeech 100h (22.39M)."""
    return _load_released("armhubert_s_100h", refresh=refresh, **kwargs)


def armhubert_s_960h(refresh=False, *args, **kwargs):
    """ARMHuBERT-S distilled on LibriSpeech 960h (22.39M)."""
    return _load_released("armhubert_s_960h", refresh=refresh, **kwargs)


def armwavlm_s_100h(refresh=False, *args, **kwargs):
    """ARMwavLM-S distilled from WavLM Base+ on LibriSpeech 100h (22.39M)."""
    return _load_released("armwavlm_s_100h", refresh=refresh, **kwargs)


def armwavlm_s_960h(refresh=False, *args, **kwargs):
    """ARMwavLM-S distilled from WavLM Base+ on LibriSpeech 960h (22.39M)."""
    return _load_released("armwavlm_s_960h", refresh=refresh, **kwargs)
