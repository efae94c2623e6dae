"""Average S3PRL checkpoints of one experiment (the original CIF-HieraDist decodes with the average
of its last 10 checkpoints).

An S3PRL ``states-<step>.ckpt`` (or ``dev-best.ckpt``) holds ``Args`` (the command line), ``Config``,
``Step``, ``Epoch``, ``Optimizer``, ``Scheduler`` and the state dicts of the trained modules:
``Featurizer``, ``Downstream`` and, when the upstream was trained (``-f``), ``Upstream``. The
average has the mean of every floating-point tensor of those state dicts and everything else
from the newest input (highest ``Step``): ``Args``, ``Config``, ``Step``, the optimizer, and the
non-float tensors (the unit table, counters). It records its inputs under :data:`RECORD`
(``[{"file", "step"}]``, oldest first), so it evaluates with ``run_downstream -m evaluate -e``
and transcribes like any checkpoint of the experiment.

"The same experiment", checked before anything is written, each difference refused in one line
naming the file and the key: the same ``Args`` of :data:`ARGS_KEYS` (the experiment folder, the
downstream, the upstream and its checkpoint, the features chosen, whether the upstream trained),
the same recognizer architecture (``Config.downstream_expert.model``), the same state-dict
entries, tensor names, shapes and kinds, and equal non-float tensors (another unit table means
another vocabulary). Every averaged tensor must be finite.

Inputs are read one at a time (``torch.load(weights_only=True)`` with the allow-list of
:mod:`recycle_distill.checkpoint.safe_load`), so memory holds the running sums, the newest input
and the one being read.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from recycle_distill.checkpoint.finite import non_finite_keys
from recycle_distill.checkpoint.safe_load import safe_torch_load
from recycle_distill.util.atomic import atomic_write, check_output_file
from recycle_distill.util.messages import plain, short_repr

__all__ = ["ARGS_KEYS", "AverageError", "ENTRIES", "RECORD", "average_checkpoints", "last_checkpoints"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

ENTRIES = ("Upstream", "Featurizer", "Downstream")  # the state dicts S3PRL saves for trained modules
RECORD = "AveragedFrom"
ARGS_KEYS = ("expdir", "downstream", "upstream", "upstream_ckpt", "upstream_model_config",
             "upstream_feature_selection", "upstream_layer_selection", "upstream_trainable")
ARCHITECTURE = ("downstream_expert", "model")  # the Config section every recognizer size is in
# Float tensors that are bookkeeping, not weights: taken from the newest (cif_asr's best dev error).
KEEP_NEWEST = ("best_error",)
# Non-float tensors that count (BatchNorm's batches seen): taken from the newest, never compared.
COUNTERS = ("num_batches_tracked",)
STATES = re.compile(r"states-(\d+)\.ckpt")


class AverageError(ValueError):
    """Checkpoints that cannot be averaged (or an output we refuse to write); names the file and key."""


@dataclass
class _Reference:
    """What the first input says the experiment is, to hold every later input against."""

    path: Path
    args: dict
    architecture: Any
    entries: dict  # entry -> {tensor name: (shape, is float)}
    tables: dict = field(default_factory=dict)  # (entry, name) -> non-float tensor


def last_checkpoints(folder: PathLike, count: int) -> list[Path]:
    """The ``count`` S3PRL training checkpoints ``states-<step>.ckpt`` of ``folder`` with the highest steps, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AverageError(f"{plain(folder)}: not an experiment folder")
    if count < 2:
        raise AverageError(f"--last {count}: averaging needs at least 2 checkpoints")
    found = sorted((int(match.group(1)), path) for path in folder.iterdir()
                   if (match := STATES.fullmatch(path.name)) and path.is_file())
    if len(found) < count:
        raise AverageError(f"{plain(folder)}: holds {len(found)} states-<step>.ckpt, fewer than the {count} asked for "
                           "(S3PRL keeps runner.max_keep of them)")
    return [path for _, path in found[-count:]]


def _read(path: Path) -> dict:
    checkpoint = safe_torch_load(path)
    shown = plain(path)
    if not isinstance(checkpoint, Mapping):
        raise AverageError(f"{shown}: not an S3PRL checkpoint (a {type(checkpoint).__name__}, not a mapping)")
    for key, kind in (("Args", None), ("Config", Mapping), ("Step", int)):
        if key not in checkpoint or (kind is not None and not isinstance(checkpoint[key], kind)):
            raise AverageError(f"{shown}: not an S3PRL checkpoint (no {key} of the right kind)")
    if not any(entry in checkpoint for entry in ENTRIES):
        raise AverageError(f"{shown}: holds none of {', '.join(ENTRIES)}: no weights to average")
    for entry in ENTRIES:
        state = checkpoint.get(entry)
        if state is not None and not (isinstance(state, Mapping)
                                      and all(isinstance(v, torch.Tensor) for v in state.values())):
            raise AverageError(f"{shown}: {entry} is not a state dict of tensors")
    return dict(checkpoint)


def _architecture(config: Mapping) -> Any:
    section: Any = config
    for key in ARCHITECTURE:
        section = section.get(key) if isinstance(section, Mapping) else None
    return section


def _reference(path: Path, checkpoint: dict) -> _Reference:
    entries = {entry: {name: (tuple(t.shape), t.is_floating_point()) for name, t in checkpoint[entry].items()}
               for entry in ENTRIES if entry in checkpoint}
    tables = {(entry, name): t.clone() for entry in entries for name, t in checkpoint[entry].items()
              if not t.is_floating_point() and not name.endswith(COUNTERS)}
    return _Reference(path, {key: getattr(checkpoint["Args"], key, None) for key in ARGS_KEYS},
                      _architecture(checkpoint["Config"]), entries, tables)


def _differs(path: Path, reference: _Reference, key: str, value: Any, expected: Any) -> AverageError:
    return AverageError(f"{plain(path)}: {key} is {short_repr(value, 160)} where {plain(reference.path)} has "
                        f"{short_repr(expected, 160)}: not the same experiment")


def _check_same(path: Path, checkpoint: dict, reference: _Reference) -> None:
    """Refuse ``checkpoint`` unless it is of the experiment ``reference`` describes."""
    for key, expected in reference.args.items():
        value = getattr(checkpoint["Args"], key, None)
        if value != expected:
            raise _differs(path, reference, f"Args.{key}", value, expected)
    architecture = _architecture(checkpoint["Config"])
    if architecture != reference.architecture:
        mine, theirs = (a if isinstance(a, Mapping) else {} for a in (architecture, reference.architecture))
        key = next((k for k in sorted(set(mine) | set(theirs), key=str) if mine.get(k) != theirs.get(k)), None)
        name = "Config." + ".".join(ARCHITECTURE) + ("" if key is None else f".{key}")
        raise _differs(path, reference, name, mine.get(key, architecture), theirs.get(key, reference.architecture))
    present = [entry for entry in ENTRIES if entry in checkpoint]
    if present != list(reference.entries):
        raise _differs(path, reference, "its state dicts", present, list(reference.entries))
    for entry, names in reference.entries.items():
        state = checkpoint[entry]
        missing = [name for name in names if name not in state]
        extra = [name for name in state if name not in names]
        if missing or extra:
            what = f"lacks {plain(missing[0], 120)}" if missing else f"has {plain(extra[0], 120)}"
            raise AverageError(f"{plain(path)}: {entry} {what}, unlike {plain(reference.path)}: not the same experiment")
        for name, (shape, is_float) in names.items():
            tensor = state[name]
            if (tuple(tensor.shape), tensor.is_floating_point()) != (shape, is_float):
                raise _differs(path, reference, f"{entry}.{name} (shape, float)",
                               (tuple(tensor.shape), tensor.is_floating_point()), (shape, is_float))
    for (entry, name), table in reference.tables.items():
        if not torch.equal(checkpoint[entry][name].cpu(), table):
            raise AverageError(f"{plain(path)}: {entry}.{plain(name, 120)} differs from {plain(reference.path)}'s "
                               "(a table, not a weight: another vocabulary?): not the same experiment")


def _check_finite(path: Path, checkpoint: dict) -> None:
    """Refuse a NaN or infinity in a tensor to average (``best_error`` is inf before the first dev
    evaluation: it is not averaged, so not checked)."""
    for entry in ENTRIES:
        bad = non_finite_keys({name: tensor for name, tensor in (checkpoint.get(entry) or {}).items()
                               if _averaged(name, tensor)})
        if bad:
            raise AverageError(f"{plain(path)}: {entry}.{plain(bad[0], 120)} holds NaN or infinite values"
                               + (f" ({len(bad) - 1} more tensors too)" if len(bad) > 1 else ""))


def _averaged(name: str, tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and not name.endswith(KEEP_NEWEST)


def _check_output(output: Path, inputs: Sequence[Path], force: bool) -> None:
    """Refuse an output that is an input, named like a training checkpoint, or that exists and is
    not an average of ours (with ``force``) / exists at all (without)."""
    for path in inputs:
        if output.resolve() == path.resolve() or (output.exists() and os.path.samefile(output, path)):
            raise AverageError(f"{plain(output)}: is one of the inputs; the inputs are never overwritten")
    if STATES.fullmatch(output.name):
        raise AverageError(f"{plain(output)}: named like a training checkpoint (S3PRL's max_keep would delete it "
                           "and --last would take it as one); choose another name")
    if not check_output_file(output):
        return
    if not force:
        raise AverageError(f"{plain(output)}: exists; pass --force to replace an earlier average")
    previous = safe_torch_load(output)
    if not (isinstance(previous, Mapping) and RECORD in previous):
        raise AverageError(f"{plain(output)}: exists and is not an averaged checkpoint (no {RECORD}); "
                           "refusing to replace it even with --force")


def average_checkpoints(paths: Sequence[PathLike], output: PathLike, force: bool = False) -> list[dict]:
    """Average the checkpoints ``paths`` of one experiment into ``output`` (written atomically).

    Args:
        paths: at least 2 S3PRL checkpoints of one experiment, in any order, each once.
        output: the averaged checkpoint; never an input, never ``states-<step>.ckpt``.
        force: replace an earlier average at ``output`` (never any other file).

    Returns:
        The record written under :data:`RECORD`: ``[{"file": path, "step": Step}]``, oldest first.

    Raises:
        AverageError: fewer than 2 inputs, one named twice, inputs of different experiments (the
            message names the file and the key), a non-finite weight, or a refused output.
        CheckpointError: an input that cannot be read safely.
    """
    inputs = [Path(path) for path in paths]
    output = Path(output)
    if len(inputs) < 2:
        raise AverageError("averaging needs at least 2 checkpoints")
    seen: dict[Path, Path] = {}
    for path in inputs:
        if path.resolve() in seen:
            raise AverageError(f"{plain(path)}: named twice (as {plain(seen[path.resolve()])})")
        seen[path.resolve()] = path
    _check_output(output, inputs, force)
    reference: Optional[_Reference] = None
    sums: dict[tuple[str, str], torch.Tensor] = {}
    newest: Optional[dict] = None
    record = []
    for path in inputs:
        checkpoint = _read(path)
        if reference is None:
            reference = _reference(path, checkpoint)
        else:
            _check_same(path, checkpoint, reference)
        _check_finite(path, checkpoint)
        for entry in reference.entries:
            for name, tensor in checkpoint[entry].items():
                if _averaged(name, tensor):
                    # float64 sums: the mean of float16/bfloat16/float32 inputs rounds once, at the end.
                    total = sums.get((entry, name))
                    sums[(entry, name)] = tensor.double() if total is None else total + tensor.double()
        record.append({"file": str(path), "step": int(checkpoint["Step"])})
        if newest is None or checkpoint["Step"] >= newest["Step"]:
            newest = checkpoint
    result = dict(newest)
    for entry in reference.entries:
        state = dict(newest[entry])
        for name, tensor in state.items():
            if _averaged(name, tensor):
                state[name] = (sums[(entry, name)] / len(inputs)).to(tensor.dtype)
        result[entry] = state
    record.sort(key=lambda item: item["step"])
    result[RECORD] = record
    atomic_write(output, lambda temp: torch.save(result, temp))
    logger.info("averaged %d checkpoints (steps %s) into %s", len(inputs), [r["step"] for r in record], output)
    return record
