"""Checkpoint reading through ``torch.load(weights_only=True)`` and an explicit allow-list.

Released checkpoints pickle a few non-tensor objects (an s3prl learning-rate schedule in
the optimizer state, fairseq's ``Dictionary`` in teacher checkpoints, ``argparse.Namespace``
in S3PRL downstream checkpoints). Instead of turning ``weights_only`` off, which would run
whatever the pickle says, each such global name is mapped to an inert stand-in class that
only stores the pickled state as plain data. Any other global is refused.
"""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from typing import Any, Mapping, Optional, Union

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


class PickledState:
    """Inert stand-in for an allow-listed class: keeps the pickled state, runs no code.

    ``state`` holds what the pickle's BUILD step provided (usually the object's ``__dict__``);
    ``args`` holds constructor arguments if the pickle used NEWOBJ with arguments.
    """

    pickled_name = "<stand-in>"

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state", {})
        if isinstance(state, dict) and name in state:
            return state[name]
        raise AttributeError(f"{self.pickled_name} stand-in has no field '{name}'")

    def __repr__(self) -> str:
        return f"<{self.pickled_name} (inert stand-in) {self.__dict__.get('state')!r}>"


def stand_in(pickled_name: str) -> type[PickledState]:
    """A fresh :class:`PickledState` subclass that reports ``pickled_name``."""
    return type(pickled_name.rsplit(".", 1)[-1], (PickledState,), {"pickled_name": pickled_name})


# Names that released and S3PRL checkpoints are known to pickle, with what replaces them.
KNOWN_GLOBALS: dict[str, Any] = {
    "s3prl.optimizers.WarmupLinearSchedule": stand_in("s3prl.optimizers.WarmupLinearSchedule"),
    "fairseq.data.dictionary.Dictionary": stand_in("fairseq.data.dictionary.Dictionary"),
    "argparse.Namespace": argparse.Namespace,
}

PathLike = Union[str, os.PathLike]


def safe_torch_load(
    path: PathLike,
    allowed: Optional[Mapping[str, Any]] = None,
    map_location: Union[str, torch.device] = "cpu",
) -> Any:
    """Load a torch checkpoint with ``weights_only=True`` plus an explicit allow-list.

    Args:
        path: the checkpoint file.
        allowed: pickled global name -> class to build in its place (defaults to
            :data:`KNOWN_GLOBALS`). Only these names (and torch's own tensor machinery)
            are accepted.
        map_location: where tensors go.

    Raises:
        CheckpointError: missing, truncated or corrupt file, or a pickle that asks for a
            global outside the allow-list (nothing from it is executed).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    allowed = KNOWN_GLOBALS if allowed is None else allowed
    safe = [(obj, name) for name, obj in allowed.items()]
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        name = _refused_global(message)
        if name:
            raise CheckpointError(
                f"{path}: refused to load: the pickle asks for '{name}', which is not on the allow-list "
                f"of data-only classes (loading it could run arbitrary code)"
            ) from None
        detail = next((line for line in message.splitlines()[1:] if line.strip()), message)
        raise CheckpointError(f"{path}: refused to load: {detail.strip()}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({first})") from None


def _refused_global(message: str) -> Optional[str]:
    """The global name torch's weights-only unpickler refused, from its error text."""
    for marker in ("Unsupported global: GLOBAL ", "unsupported GLOBAL "):
        if marker in message:
            return message.split(marker, 1)[1].split()[0]
    return None
