"""Recognise a training run's output folder: what ``--overwrite`` may move aside.

A run folder holds only what :class:`~recycle_distill.training.trainer.Trainer` writes there:
``config.json`` (our sections), ``metrics.jsonl``, ``validation.jsonl``, ``loss.svg``,
``student.safetensors``, ``checkpoints/``
(``step-*.pt``, ``best.pt``), ``tensorboard/`` (event files), ``manifests/`` (scan caches),
and the ``.tmp-*`` files a killed write leaves. Anything else (a project with ``src/``, a
``config.json`` of another program) means the folder is not ours, and it is left alone.
"""

from __future__ import annotations

import json
import os
import re

__all__ = ["foreign_entries"]

# Entry -> what a folder of that name may hold (None: a file).
_FOLDERS = {
    "checkpoints": re.compile(r"(step-\d+\.pt|best\.pt|\.tmp-.*)", re.DOTALL),
    "tensorboard": re.compile(r"events\.out\.tfevents\..*", re.DOTALL),
    "manifests": re.compile(r"([^/]+\.tsv|\.tmp-.*)", re.DOTALL),
}
_FILES = ("metrics.jsonl", "validation.jsonl", "loss.svg", "student.safetensors")
_TEMP = re.compile(r"\.tmp-.*", re.DOTALL)
_CONFIG_SECTIONS = {"teacher", "train", "optimizer", "data", "distiller", "family"}
_MAX_CONFIG_BYTES = 10 * 2**20


def foreign_entries(folder: str) -> list[str]:
    """The entries of ``folder`` that a training run does not write (sorted); [] for one of our runs."""
    foreign = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.islink(path):
            foreign.append(name)
        elif name in _FOLDERS:
            if not os.path.isdir(path) or not all(_FOLDERS[name].fullmatch(entry) and
                                                  os.path.isfile(os.path.join(path, entry))
                                                  for entry in os.listdir(path)):
                foreign.append(name)
        elif name == "config.json":
            if not _is_our_config(path):
                foreign.append(name)
        elif not ((name in _FILES or _TEMP.fullmatch(name)) and os.path.isfile(path)):
            foreign.append(name)
    return foreign


def _is_our_config(path: str) -> bool:
    """``config.json`` as the trainer writes it: a JSON object of our sections only."""
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > _MAX_CONFIG_BYTES:
            return False
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"train", "distiller", "family"} <= set(data) <= _CONFIG_SECTIONS
