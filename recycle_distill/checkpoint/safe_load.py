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
from typing import Any, Mapping, Optional, Union

import torch

from recycle_distill.checkpoint.zip_records import check_storage_records
from recycle_distill.util.messages import plain, short_repr


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


class TeacherCheckpointError(CheckpointError):
    """A teacher checkpoint that cannot be read or built; the message names the file."""


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
    check_readable_file(path)
    shown = plain(path)  # what messages show: one line, bounded
    allowed = KNOWN_GLOBALS if allowed is None else allowed
    safe = [(obj, name) for name, obj in allowed.items()]
    try:
        problem = check_storage_records(path)
    except Exception as err:  # malformed zip directory or pickle: unreadable, whatever the type
        raise CheckpointError(f"{shown}: truncated or corrupt checkpoint ({_first_line(err)})") from None
    if problem:
        raise CheckpointError(f"{shown}: truncated or corrupt checkpoint: {problem}")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head.startswith((b"PK", b"\x80")):  # neither torch's zip format nor its legacy pickle
        raise CheckpointError(f"{shown}: truncated or corrupt checkpoint (not a torch checkpoint: no zip or pickle header)")
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        name = _refused_global(message)
        if name:
            raise CheckpointError(
                f"{shown}: refused to load: the pickle asks for {short_repr(name)}, which is not on the allow-list "
                f"of data-only classes (loading it could run arbitrary code)"
            ) from None
        marker = "WeightsUnpickler error: "
        if marker in message:
            detail = message.split(marker, 1)[1]
        else:
            detail = next((line for line in message.splitlines()[1:] if line.strip()), message)
        detail = detail.strip().splitlines()[0] if detail.strip() else "unpickling failed"
        raise CheckpointError(f"{shown}: refused to load: {plain(detail, 200)}") from None
    except MemoryError:
        raise CheckpointError(f"{shown}: refused to load: it asks for more memory than is available") from None
    except Exception as err:  # noqa: BLE001  (OSError, KeyError, IndexError, ... : all mean unreadable)
        raise CheckpointError(f"{shown}: truncated or corrupt checkpoint ({_first_line(err)})") from None


def check_readable_file(path: str) -> None:
    """Raise CheckpointError unless ``path`` is an existing regular file (says which it is not)."""
    shown = plain(path)
    if os.path.isdir(path):
        raise CheckpointError(f"{shown}: is a directory, not a checkpoint file")
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {shown}")
    if not os.path.isfile(path):
        raise CheckpointError(f"{shown}: not a regular file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{shown}: not readable (permission denied)")


def _first_line(err: BaseException) -> str:
    """The first line of an error's text, bounded, or its type name."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return plain(first, 200)


def _refused_global(message: str) -> Optional[str]:
    """The global name torch's weights-only unpickler refused, from its error text."""
    for marker in ("Unsupported global: GLOBAL ", "unsupported GLOBAL "):
        if marker in message:
            return message.split(marker, 1)[1].split()[0]
    return None
