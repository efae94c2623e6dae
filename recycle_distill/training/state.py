"""Training checkpoints: full state for exact resume, written atomically, pruned, exported.

A checkpoint is written to a temporary file in the same folder and renamed into place, so a
crash (even SIGKILL) during the write leaves the previous checkpoint intact and loadable. A
write that fails for want of space (checkpoint or export) is one :class:`DiskFullError` line
naming the file, the disk and its free space.
Only plain data is stored (tensors, numbers, strings, lists, dicts): RNG states included,
so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import random
import re
import shutil
from typing import Any, Iterator, Optional

import numpy as np
import torch

from recycle_distill import families
from recycle_distill.checkpoint import safe_torch_load, save_compact
from recycle_distill.checkpoint.compact import atomic_write
# The one class for weights holding NaN/inf (a RuntimeError): export_student raises it with its own words.
from recycle_distill.checkpoint.finite import NonFiniteWeightsError

logger = logging.getLogger(__name__)

__all__ = ["capture_rng", "restore_rng", "save_training_state", "load_training_state", "latest_checkpoint",
           "prune_checkpoints", "export_student", "NonFiniteWeightsError", "DiskFullError"]

FORMAT = "recycle-distill-train"
STEP_FILE = re.compile(r"step-(\d+)\.pt$")


def capture_rng() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states as plain data."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), int(numpy_state[2]),
                  int(numpy_state[3]), float(numpy_state[4])],
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(folder: str, step: int, state: dict[str, Any], name: Optional[str] = None) -> str:
    """Write ``state`` as ``<folder>/step-<step>.pt`` (or ``name``) atomically; returns the path."""
    path = os.path.join(folder, name or f"step-{step:08d}.pt")
    payload = {"format": FORMAT, "version": 1, "step": step, **state}

    def write(temp_path: str) -> None:
        # Through a Python file: a full disk is then OSError(ENOSPC), not the C++ writer's
        # "[enforce fail at inline_container.cc] unexpected pos".
        with open(temp_path, "wb") as handle:
            torch.save(payload, handle)

    with _explain_full_disk(path):
        atomic_write(path, write)
    return path


class DiskFullError(OSError):
    """A checkpoint or the export could not be written: no space left (the message names the disk)."""


def _mount_point(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    while not os.path.ismount(folder):
        folder = os.path.dirname(folder)
    return folder


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} bytes" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # unreachable


def _is_full_disk(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)  # safetensors and torch's own writer report it in their message
    return "No space left on device" in text or "Disk quota exceeded" in text


@contextlib.contextmanager
def _explain_full_disk(path: str) -> Iterator[None]:
    """Turn a full-disk failure of writing ``path`` into one line naming the file and the disk."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:  # noqa: BLE001  (OSError, safetensors' and torch's own errors)
        if not _is_full_disk(error):
            raise
        mount = _mount_point(path)
        try:
            free = f"{_size(shutil.disk_usage(mount).free)} free"
        except OSError:
            free = "free space unknown"
        raise DiskFullError(
            f"could not write {path}: no space left on the disk at {mount} ({free}); free some space, then "
            "resume with train.checkpoint=last (earlier checkpoints are intact)"
        ) from None


def load_training_state(path: str) -> dict[str, Any]:
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a recycle-distill training checkpoint")
    return state


def step_checkpoints(folder: str) -> list[str]:
    """Step checkpoints in ``folder``, oldest first."""
    paths = [p for p in glob.glob(os.path.join(folder, "step-*.pt")) if STEP_FILE.search(p)]
    return sorted(paths, key=lambda p: int(STEP_FILE.search(p).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(folder: str) -> Optional[str]:
    paths = step_checkpoints(folder)
    return paths[-1] if paths else None


def prune_checkpoints(folder: str, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (``best.pt`` is separate)."""
    for path in step_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        os.remove(path)


def export_student(path: str, model: torch.nn.Module, family: str, delete_projections: bool,
                   provenance: Optional[dict[str, Any]] = None) -> str:
    """Write the runtime's compact checkpoint (loads with the upstreams and torch.hub), with the
    run's ``provenance`` (:mod:`recycle_distill.training.provenance`) in its metadata.

    ``delete_projections`` drops the prediction heads the published model does not keep:
    FitHuBERT keeps only its last-layer head; other families keep no heads then.
    """
    config = model.config.to_dict()
    state = {k: v for k, v in model.state_dict().items()}
    if delete_projections and families.family(family).time_reduction:
        last = len(config["pred_layer_id"]) - 1
        config["pred_layer_id"] = [config["encoder_layers"] - 1]
        state = {_renumber_head(k, last): v for k, v in state.items() if not _is_head(k) or _head_index(k) == last}
    elif delete_projections:
        raise ValueError(f"delete_projections: {family}'s S3PRL features are its heads; keep them")
    broken = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise NonFiniteWeightsError(
            f"not exporting {path}: {len(broken)} weight tensor(s) hold NaN or infinite values "
            f"(first: {broken[0]}); the training diverged"
        )
    with _explain_full_disk(path):
        save_compact(path, state, family, config, provenance=provenance)
    return path


def _is_head(key: str) -> bool:
    return key.startswith("proj_head.")


def _head_index(key: str) -> int:
    return int(key.split(".")[1])


def _renumber_head(key: str, last: int) -> str:
    return f"proj_head.0.{key.split('.', 2)[2]}" if _is_head(key) and _head_index(key) == last else key
