"""Rebuild a trained ``cif_asr`` experiment: upstream, featurizer, recognizer and vocabulary.

An experiment is what S3PRL's runner (``run_downstream.py`` / ``recycle-distill superb -d
cif_asr``) writes into its expdir: checkpoints (``dev-best.ckpt``, ``states-<step>.ckpt``)
holding ``Args`` (the command line), ``Config`` (the YAML with overrides), the ``Featurizer``
and ``Downstream`` state dicts (and ``Upstream`` when it was trained), and the expert's
``vocab.json``. Checkpoints are read with ``torch.load(weights_only=True)`` and the package's
allow-list (:func:`recycle_distill.checkpoint.safe_load.safe_torch_load`: ``argparse.Namespace``
and stand-ins for S3PRL's scheduler), never with code execution.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn as nn

from recycle_distill.checkpoint.safe_load import CheckpointError, safe_torch_load
from recycle_distill.downstreams.cif_asr.config import CifAsrConfig, DecodeConfig
from recycle_distill.downstreams.cif_asr.model import CifRecognizer
from recycle_distill.downstreams.cif_asr.text import BLANK, BOS, EOS, PAD, UnitVocabulary
from recycle_distill.s3prl.compat import apply_compat
from recycle_distill.s3prl.superb.launcher import hub_entries
from recycle_distill.util.messages import plain
from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = ["LoadedExperiment", "ExperimentError", "find_checkpoint", "load_experiment"]

logger = logging.getLogger(__name__)

BEST = "dev-best.ckpt"
STEP_CHECKPOINT = re.compile(r"^states-(\d+)\.ckpt$")
REQUIRED = ("Args", "Config", "Featurizer", "Downstream")


class ExperimentError(ValueError):
    """A folder or checkpoint that is not a usable ``cif_asr`` experiment."""


@dataclass
class LoadedExperiment:
    """The parts of a trained experiment, in eval mode on one device."""

    checkpoint: Path
    upstream: nn.Module
    featurizer: nn.Module
    model: CifRecognizer
    vocab: UnitVocabulary
    decode: DecodeConfig

    @property
    def frame_seconds(self) -> float:
        """Seconds per CIF (encoder) frame: the upstream's rate times the encoder's poolings."""
        return self.model.encoder.output_rate / SAMPLE_RATE


def find_checkpoint(path: Union[str, Path]) -> Path:
    """``path`` itself when it is a file; in a folder ``dev-best.ckpt``, else the
    ``states-<step>.ckpt`` of the highest step."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ExperimentError(f"{plain(path)}: no such experiment folder or checkpoint")
    if (path / BEST).is_file():
        return path / BEST
    steps = sorted((int(m.group(1)), child) for child in path.iterdir() if (m := STEP_CHECKPOINT.match(child.name)))
    if not steps:
        raise ExperimentError(f"{plain(path)}: holds neither {BEST} nor states-<step>.ckpt; is it an S3PRL expdir?")
    return steps[-1][1]


def _read_states(checkpoint: Path) -> dict:
    try:
        states = safe_torch_load(checkpoint)
    except CheckpointError as error:
        raise ExperimentError(f"not a readable S3PRL checkpoint: {error}") from None
    if not isinstance(states, dict):
        raise ExperimentError(f"{plain(checkpoint)}: expected S3PRL's dict of states, got {type(states).__name__}")
    missing = [key for key in REQUIRED if key not in states]
    if missing:
        raise ExperimentError(f"{plain(checkpoint)}: not an S3PRL downstream checkpoint (missing {', '.join(missing)})")
    args = states["Args"]
    if not isinstance(args, argparse.Namespace) or not isinstance(states["Config"], dict):
        raise ExperimentError(f"{plain(checkpoint)}: Args must be an argparse namespace and Config a dict")
    if getattr(args, "downstream", None) != "cif_asr":
        raise ExperimentError(f"{plain(checkpoint)}: Args.downstream is {plain(getattr(args, 'downstream', None))}, "
                              "not cif_asr")
    return states


def build_upstream(args: argparse.Namespace, dtype: Optional[str]) -> nn.Module:
    """The upstream ``-u`` named: ours through our hub entries (``dtype`` e.g. ``bf16``),
    any other through ``s3prl.hub`` (where ``dtype`` is refused)."""
    name = getattr(args, "upstream", None)
    if getattr(args, "from_hf_hub", False):
        raise ExperimentError(f"Args.upstream {plain(name)}: upstreams from the Hugging Face Hub (--from_hf_hub) "
                              "are not supported; rebuild it yourself")
    options = dict(ckpt=getattr(args, "upstream_ckpt", None), model_config=getattr(args, "upstream_model_config", None))
    ours = hub_entries()
    if name in ours:
        return ours[name](**options, **({"dtype": dtype} if dtype else {}))
    if dtype:
        raise ExperimentError(f"--upstream_dtype {plain(dtype)}: only recycle-distill's students take a precision; "
                              f"Args.upstream {plain(name)} is an S3PRL upstream")
    apply_compat()
    hub = importlib.import_module("s3prl.hub")
    entry = getattr(hub, str(name), None)
    if entry is None or not callable(entry):
        raise ExperimentError(f"Args.upstream {plain(name)}: no such entry in s3prl.hub or among our students")
    return entry(**options, refresh=False)


def _recognizer(states: dict, upstream_dim: int, upstream_rate: int, vocab: UnitVocabulary,
                checkpoint: Path) -> tuple[CifRecognizer, DecodeConfig]:
    section = states["Config"].get("downstream_expert") or {}
    config = CifAsrConfig.from_dict({key: section[key] for key in CifAsrConfig.SECTIONS if key in section})
    prefix = "model."
    weights = {key[len(prefix):]: value for key, value in states["Downstream"].items() if key.startswith(prefix)}
    acd = weights.get("acd_proj.weight")
    lm_dim = None if acd is None else int(acd.shape[0])
    model = CifRecognizer(config.model, config.loss, upstream_dim, upstream_rate, len(vocab), lm_dim,
                          blank=BLANK, pad=PAD, bos=BOS, eos=EOS)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ExperimentError(f"{plain(checkpoint)}: Downstream weights do not fit the recognizer its Config and "
                              f"vocab.json describe ({plain(str(error).splitlines()[0], 300)})") from None
    saved_ids = states["Downstream"].get("unit_lm_ids")
    if saved_ids is not None and saved_ids.tolist() != list(vocab.lm_ids):
        raise ExperimentError(f"{plain(checkpoint)}: vocab.json is not the unit vocabulary this checkpoint was "
                              "trained with")
    return model, config.decode


def _vocabulary(checkpoint: Path, args: argparse.Namespace) -> UnitVocabulary:
    candidates = [checkpoint.parent / "vocab.json"]
    if getattr(args, "expdir", None):
        candidates.append(Path(args.expdir) / "vocab.json")
    for candidate in candidates:
        if candidate.is_file():
            return UnitVocabulary.load(candidate)
    raise ExperimentError(f"{plain(checkpoint)}: no vocab.json beside it or in Args.expdir; the expert writes it "
                          "into the expdir when training starts")


def load_experiment(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                    upstream_dtype: Optional[str] = None, **overrides: Any) -> LoadedExperiment:
    """Rebuild the experiment at ``path`` (an expdir or one of its checkpoints).

    Args:
        device: where every part runs.
        upstream_dtype: our students' precision (``fp32``, ``bf16``, ``int8``); None keeps fp32.
        overrides: ``decode`` keys (``beam_size``, ``tail_threshold``, ``max_steps``) replacing the
            experiment's.
    """
    checkpoint = find_checkpoint(path)
    states = _read_states(checkpoint)
    args = states["Args"]
    upstream = build_upstream(args, upstream_dtype)
    if "Upstream" in states:
        upstream.load_state_dict(states["Upstream"])
    upstream = upstream.to(device).eval()
    apply_compat()
    from s3prl.upstream.interfaces import Featurizer

    selection = getattr(args, "upstream_feature_selection", None) or "hidden_states"
    featurizer = Featurizer(upstream, selection, upstream_device=str(device),
                            layer_selection=getattr(args, "upstream_layer_selection", None),
                            normalize=bool(getattr(args, "upstream_feature_normalize", False)))
    featurizer.load_state_dict(states["Featurizer"])
    featurizer = featurizer.to(device).eval()
    vocab = _vocabulary(checkpoint, args)
    model, decode = _recognizer(states, featurizer.output_dim, featurizer.downsample_rate, vocab, checkpoint)
    if overrides:
        decode = DecodeConfig.from_dict({**vars(decode), **overrides})
    logger.info("experiment %s: upstream %s, %d units (%s), beam %d", checkpoint, getattr(args, "upstream", "?"),
                len(vocab), vocab.language, decode.beam_size)
    return LoadedExperiment(checkpoint, upstream, featurizer, model.to(device).eval(), vocab, decode)
