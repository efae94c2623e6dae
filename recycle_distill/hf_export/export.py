"""Write a student as a Hugging Face folder (read back by :mod:`recycle_distill.checkpoint.hf_folder`).

Layout written by :func:`export_hf` (``DIR``):

* ``config.json``: a transformers config; its ``recycle_distill`` block holds the family, the
  distiller architecture and the format version, which :func:`recycle_distill.checkpoint.hf_folder.read_hf_student` reads back;
* ``model.safetensors``: the weights (``HubertModel`` keys for MaskHuBERT / STaRHuBERT, our
  own keys for ARMHuBERT / FitHuBERT);
* ``projection_heads.safetensors`` (MaskHuBERT), or ``configuration_<family>.py`` +
  ``modeling_<family>.py`` (ARMHuBERT / FitHuBERT, ``trust_remote_code=True``);
* ``preprocessor_config.json`` (raw 16 kHz waves, no normalisation) and ``README.md`` (card).

The folder is written whole beside its target and swapped in when complete
(:func:`recycle_distill.util.atomic.atomic_write_folder`): a failure (a full disk) leaves the
previous export as it was. Only a missing or empty folder, or an earlier export of ours holding
nothing but the files above, is replaced (:func:`check_hf_output`); a folder of anything else
is refused with what is in it, and never touched.

Nothing needs ``transformers`` except building the plain ``HubertModel`` once to check that
every key fits (``transformers`` comes with the ``.[hf]`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Optional

import torch
from safetensors.torch import save_file

from recycle_distill.checkpoint.finite import check_finite_on_export
from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.util.atomic import (OutputError, atomic_write_folder, check_output_folder, default_mode,
                                         listing)
from recycle_distill.util.marker_json import our_block
from recycle_distill.util.messages import plain, short_repr
from recycle_distill.checkpoint.hf_folder import HF_FORMAT_VERSION
from recycle_distill.checkpoint.hf_keys import HEADS_FILE, to_hf_state_dict
from recycle_distill import families
from recycle_distill.hf_export.hubert_config import hubert_config
from recycle_distill.hf_export.model_card import model_card
from recycle_distill.hf_export.remote_code import auto_map, render

logger = logging.getLogger(__name__)

__all__ = ["export_hf", "check_hf_output"]
PREPROCESSOR = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": 16000,
                "padding_value": 0.0, "padding_side": "right", "do_normalize": False, "return_attention_mask": True}


def _transformers_version() -> str:
    try:
        import transformers
    except ImportError:
        raise RuntimeError("exporting a Hugging Face folder needs transformers: pip install 'recycle-distill[hf]'") from None
    return transformers.__version__


# Files an export writes (and the generated code of each remote-code family): only a folder
# holding nothing else is replaced. A temporary entry a killed in-place swap left (see
# atomic_write_folder) counts as ours too.
OWN_FILES = ("config.json", "model.safetensors", HEADS_FILE, "preprocessor_config.json", "README.md")
LEFTOVER = re.compile(r"\..+\.(tmp|old)-[A-Za-z0-9_]{8}\Z")
# An export's config.json is a few kilobytes; a larger one is not ours.
CONFIG_LIMIT = 1 << 20


def _own_names() -> set[str]:
    names = set(OWN_FILES)
    for family in families.exported_as("remote"):
        names.update((f"configuration_{family}.py", f"modeling_{family}.py"))
    return names


def _is_our_export(directory: str) -> bool:
    """True when ``directory/config.json`` is a small JSON file with our ``recycle_distill`` block."""
    meta = our_block(os.path.join(directory, "config.json"), CONFIG_LIMIT)
    return meta is not None and isinstance(meta.get("family"), str) and isinstance(meta.get("format_version"), int)


def check_hf_output(directory: str) -> bool:
    """True when ``directory`` holds an earlier export of ours that a new export may replace,
    False when it is missing or empty; :class:`OutputError` for anything else: not a folder
    (a file, a device, a FIFO), a non-empty folder we did not write, or an export the user
    added files to (each refusal names what is there)."""
    names = check_output_folder(directory)
    if not names:
        return False
    if not _is_our_export(directory):
        raise OutputError(f"{plain(directory)}: not empty and not a recycle-distill export (no config.json with a "
                          f"'recycle_distill' block); it holds {listing(names)}; refusing to write into it: "
                          f"choose a new or empty folder")
    own = _own_names()
    foreign = [name for name in names if name not in own and not LEFTOVER.match(name)]
    if foreign:
        raise OutputError(f"{plain(directory)}: holds files that an export does not write ({listing(foreign)}); "
                          f"refusing to replace it: move them out or choose another folder")
    return True


def export_hf(model: Any, family: str, directory: str, *, release: Optional[str] = None,
              teacher: Optional[str] = None, data: Optional[str] = None,
              provenance: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write ``model`` (a :class:`StudentModel` of ``family``) as a Hugging Face folder.

    The folder is written beside ``directory`` and swapped in when complete; an earlier export
    there is replaced, anything else is refused (:func:`check_hf_output`).

    Args:
        release: hub entry of a published release (adds the published SUPERB numbers).
        teacher, data: what the card states (defaults: the provenance's, the release's, else "unknown").
        provenance: the training record of a student trained here (teacher, data, objective, steps,
            precision; :func:`recycle_distill.checkpoint.read_provenance`): kept in ``config.json``'s
            ``recycle_distill`` block and stated by the card.

    Returns:
        ``{"directory", "files", "parameters", "kind"}`` (kind: ``hubert`` or ``remote-code``).

    Raises:
        OutputError: ``directory`` is not a folder we may replace (nothing was written).
    """
    version = _transformers_version()
    check_hf_output(directory)
    config = model.config
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    check_finite_on_export(state, directory)  # NaN/inf weights are never exported
    meta = {"format_version": HF_FORMAT_VERSION, "family": family, "distiller": config.to_dict(), "release": release}
    if provenance:
        meta["provenance"] = dict(provenance)
    parameters = sum(p.numel() for p in model.parameters())
    heads_file, heads, sources = None, {}, {}
    # The family's row says which kind of folder it exports as.
    if family in families.exported_as("hubert"):
        kind = "hubert"
        hf_config = {**hubert_config(config, family), "torch_dtype": "float32", "transformers_version": version,
                     "recycle_distill": meta}
        weights, heads = to_hf_state_dict(state, config)
        _check_hubert_keys(hf_config, weights)
        if heads:
            heads_file = HEADS_FILE
    elif family in families.exported_as("remote"):
        kind = "remote-code"
        sources = render(family)
        prefix_model = auto_map(family)["AutoModel"].split(".")[1]
        hf_config = {"model_type": family, "architectures": [prefix_model], "auto_map": auto_map(family),
                     "family": family, "distiller": meta["distiller"], "torch_dtype": "float32",
                     "transformers_version": version, "recycle_distill": meta}
        _check_remote_keys(hf_config, state)
        weights = state
    else:
        raise CheckpointError(f"no Hugging Face export for family {short_repr(family)}")
    card = model_card(family=family, parameters=parameters, config=meta["distiller"], plain=kind == "hubert",
                      release=release, teacher=teacher, data=data, heads_file=heads_file, provenance=provenance)

    def write(folder: str) -> None:
        save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        if heads:
            save_file(heads, os.path.join(folder, HEADS_FILE), metadata={"format": "pt", "applies_to": "hidden_states[i+1]"})
        for name, source in sources.items():
            with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
                handle.write(source)
        _write_json(os.path.join(folder, "config.json"), hf_config)
        _write_json(os.path.join(folder, "preprocessor_config.json"), PREPROCESSOR)
        with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(card)
        for name in os.listdir(folder):  # safetensors writes 0o600; every file follows the umask
            os.chmod(os.path.join(folder, name), default_mode())

    atomic_write_folder(directory, write)
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
