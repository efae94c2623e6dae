"""Write a student as a Hugging Face folder (read back by :mod:`recycle_distill.checkpoint.hf_folder`).

Layout written by :func:`export_hf` (``DIR``):

* ``config.json``: a transformers config; its ``recycle_distill`` block holds the family, the
  distiller architecture and the format version, which :func:`recycle_distill.checkpoint.hf_folder.read_hf_student` reads back;
* ``model.safetensors``: the weights (``HubertModel`` keys for MaskHuBERT / STaRHuBERT, our
  own keys for ARMHuBERT / FitHuBERT);
* ``projection_heads.safetensors`` (MaskHuBERT), or ``configuration_<family>.py`` +
  ``modeling_<family>.py`` (ARMHuBERT / FitHuBERT, ``trust_remote_code=True``);
* ``preprocessor_config.json`` (raw 16 kHz waves, no normalisation) and ``README.md`` (card).

Nothing needs ``transformers`` except building the plain ``HubertModel`` once to check that
every key fits (``transformers`` comes with the ``.[hf]`` extra).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import torch
from safetensors.torch import save_file

from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.util.messages import short_repr
from recycle_distill.checkpoint.hf_folder import HF_FORMAT_VERSION
from recycle_distill.checkpoint.hf_keys import HEADS_FILE, to_hf_state_dict
from recycle_distill import families
from recycle_distill.hf_export.hubert_config import hubert_config
from recycle_distill.hf_export.model_card import model_card
from recycle_distill.hf_export.remote_code import auto_map, render

logger = logging.getLogger(__name__)

__all__ = ["export_hf"]
PREPROCESSOR = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": 16000,
                "padding_value": 0.0, "padding_side": "right", "do_normalize": False, "return_attention_mask": True}


def _transformers_version() -> str:
    try:
        import transformers
    except ImportError:
        raise RuntimeError("exporting a Hugging Face folder needs transformers: pip install 'recycle-distill[hf]'") from None
    return transformers.__version__


def export_hf(model: Any, family: str, directory: str, *, release: Optional[str] = None,
              teacher: Optional[str] = None, data: Optional[str] = None) -> dict[str, Any]:
    """Write ``model`` (a :class:`StudentModel` of ``family``) as a Hugging Face folder.

    Args:
        release: hub entry of a published release (adds the published SUPERB numbers).
        teacher, data: what the card states (defaults: the release's, else "unknown").

    Returns:
        ``{"directory", "files", "parameters", "kind"}`` (kind: ``hubert`` or ``remote-code``).
    """
    version = _transformers_version()
    config = model.config
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    os.makedirs(directory, exist_ok=True)
    # A re-export into the same folder must not leave another family's files behind
    # (a stale heads file would be read back as part of the student).
    for name in os.listdir(directory):
        if name in (HEADS_FILE, "model.safetensors") or (name.endswith(".py") and name.startswith(("configuration_", "modeling_"))):
            os.remove(os.path.join(directory, name))
    meta = {"format_version": HF_FORMAT_VERSION, "family": family, "distiller": config.to_dict(), "release": release}
    parameters = sum(p.numel() for p in model.parameters())
    heads_file = None
    # The family's row says which kind of folder it exports as.
    if family in families.exported_as("hubert"):
        kind = "hubert"
        hf_config = {**hubert_config(config, family), "torch_dtype": "float32", "transformers_version": version,
                     "recycle_distill": meta}
        hf_state, heads = to_hf_state_dict(state, config)
        _check_hubert_keys(hf_config, hf_state)
        save_file(hf_state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        if heads:
            heads_file = HEADS_FILE
            save_file(heads, os.path.join(directory, HEADS_FILE), metadata={"format": "pt", "applies_to": "hidden_states[i+1]"})
    elif family in families.exported_as("remote"):
        kind = "remote-code"
        for name, source in render(family).items():
            with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
                handle.write(source)
        prefix_model = auto_map(family)["AutoModel"].split(".")[1]
        hf_config = {"model_type": family, "architectures": [prefix_model], "auto_map": auto_map(family),
                     "family": family, "distiller": meta["distiller"], "torch_dtype": "float32",
                     "transformers_version": version, "recycle_distill": meta}
        _check_remote_keys(hf_config, state)
        save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    else:
        raise CheckpointError(f"no Hugging Face export for family {short_repr(family)}")
    _write_json(os.path.join(directory, "config.json"), hf_config)
    _write_json(os.path.join(directory, "preprocessor_config.json"), PREPROCESSOR)
    card = model_card(family=family, parameters=parameters, config=meta["distiller"], plain=kind == "hubert",
                      release=release, teacher=teacher, data=data, heads_file=heads_file)
    with open(os.path.join(directory, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(card)
    return {"directory": directory, "files": sorted(os.listdir(directory)), "parameters": parameters, "kind": kind}


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def _check_hubert_keys(hf_config: dict, hf_state: dict) -> None:
    """Build transformers' HubertModel on the meta device and insist every key and shape fits."""
    from transformers import HubertConfig, HubertModel

    fields = {k: v for k, v in hf_config.items() if k not in ("recycle_distill", "transformers_version")}
    with torch.device("meta"):
        reference = HubertModel(HubertConfig(**fields)).state_dict()
    _compare(reference, hf_state, "transformers HubertModel")


def _check_remote_keys(hf_config: dict, state: dict) -> None:
    """Build the template model on the meta device and insist every key and shape fits."""
    from recycle_distill.hf_export import remote_template

    config = remote_template.StudentHFConfig(family=hf_config["family"], distiller=hf_config["distiller"])
    with torch.device("meta"):
        reference = remote_template.StudentHFModel(config).state_dict()
    # The template's weight-norm conv may use torch's parametrization names; files keep ours.
    renamed = {key.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): value for key, value in reference.items()}
    _compare(renamed, state, "generated model")


def _compare(reference: dict, state: dict, what: str) -> None:
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    shapes = sorted(k for k in set(reference) & set(state) if tuple(reference[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise CheckpointError(f"the export does not fit the {what}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                              f"shape mismatches {shapes[:5]}")
