"""Run an exported student (:func:`~recycle_distill.inference.onnx_export.export_onnx`) in ONNX Runtime.

:class:`OnnxStudentUpstream` has the call and outputs of :class:`recycle_distill.s3prl.upstream.StudentUpstream`
(a list of 1-D waveforms in, ``hidden_states`` N x (B, T, D) and ``last_hidden_state`` out,
``get_downsample_rates``), so S3PRL's Featurizer, a frozen-upstream SUPERB run or a user's
pipeline takes it in place of the PyTorch upstream. It is an ``nn.Module`` without parameters:
``.to()``, ``.eval()``, ``.train()`` are harmless, and outputs come back as float32 tensors on
the device of the input waveforms (the session itself runs on the CPU provider).

What a file is trusted with (docs/inference.md, "What an ONNX file is trusted with"): an ONNX
graph runs no Python, but it costs what its nodes ask. A file is refused unless it looks like
one of our exports: no node with a subgraph (``Loop``, ``Scan``, ``If``: control flow our exports
never write), no tensor read from another file, metadata with the values our exports write,
and inputs and outputs of the contract's names, types, ranks and sizes (checked as declared,
on a short probe at load and on every call). ``allow_any_graph=True`` lifts the graph rule
only; ``timeout=`` stops a call that runs longer (ONNX Runtime's ``RunOptions.terminate``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from recycle_distill.students.config import MAX_LAYERS
from recycle_distill.students.waveforms import validate_waveforms
from recycle_distill.students.blocks.masks import pad_waveforms
from recycle_distill.inference.onnx_checks import check_onnx_graph, import_onnx_package
from recycle_distill.inference.chunked import chunk_settings, run_chunked_batch
from recycle_distill.inference.onnx_export import META_PREFIX, ONNX_DTYPES, ONNX_FORMAT_VERSION, OUTPUT_NAMES
from recycle_distill.util.messages import plain, short_repr
from recycle_distill.util.options import check_bool, check_seconds, check_whole_number
from recycle_distill.util.sample_rate import SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = ["OnnxStudentUpstream", "read_onnx_metadata", "check_onnx_graph", "MAX_THREADS"]

_REQUIRED_KEYS = ("family", "onnx_version", "num_layers", "hidden_dim", "downsample_rate", "receptive_field",
                  "sample_rate")
# ONNX Runtime starts one OS thread per intra-op thread; far beyond any CPU's use, and a
# million of them crash the process.
MAX_THREADS = 256
# Receptive field and frame rate of a speech model are milliseconds; a minute is far beyond.
MAX_RATE = 60 * SAMPLE_RATE
MAX_DIM = 2**31 - 1
# metadata key -> (low, high) of its whole-number value
_WHOLE_NUMBERS = {"num_layers": (1, MAX_LAYERS), "hidden_dim": (1, MAX_DIM),
                  "downsample_rate": (1, MAX_RATE), "receptive_field": (1, MAX_RATE)}
# What our exports declare: name -> (element type, rank)
_INPUTS = {"waveforms": ("tensor(float)", 2), "lengths": ("tensor(int64)", 1)}
_OUTPUTS = {"hidden_states": ("tensor(float)", 4), "last_hidden_state": ("tensor(float)", 3),
            "padding_mask": ("tensor(bool)", 2)}
_AXES = {"hidden_states": "(num_layers, batch, frames, hidden_dim)", "last_hidden_state": "(batch, frames, hidden_dim)",
         "padding_mask": "(batch, frames)", "waveforms": "(batch, samples)", "lengths": "(batch,)"}


def read_onnx_metadata(session: Any, path: str) -> dict[str, str]:
    """Our ``recycle_distill.*`` metadata of a loaded session (prefix removed), checked for format.

    Raises:
        ValueError: the file lacks our metadata, has another export version, or a value our
            exports never write (one line naming the file and the key).
    """
    shown = plain(path)
    props = session.get_modelmeta().custom_metadata_map
    ours = {key[len(META_PREFIX):]: value for key, value in props.items() if key.startswith(META_PREFIX)}
    if not ours:
        raise ValueError(f"{shown}: not a recycle-distill ONNX export (no {META_PREFIX}* metadata); "
                         f"write it with 'recycle-distill export ... --format onnx'")
    version = ours.get("onnx_version")
    if version != str(ONNX_FORMAT_VERSION):
        raise ValueError(f"{shown}: ONNX export version {short_repr(version)}, this package reads version "
                         f"{ONNX_FORMAT_VERSION}; export it again with this version")
    missing = [key for key in _REQUIRED_KEYS if key not in ours]
    if missing:
        raise ValueError(f"{shown}: its metadata lacks {', '.join(META_PREFIX + key for key in missing)}")
    _check_metadata_values(ours, shown)
    return ours


def _check_metadata_values(ours: dict[str, str], shown: str) -> None:
    """The values our exports write: known family, 16 kHz, an ONNX precision, sane whole numbers."""
    from recycle_distill.students import FAMILIES

    family = ours["family"]
    if family not in FAMILIES:
        raise ValueError(f"{shown}: metadata key {META_PREFIX}family: {short_repr(family)} is not a student family "
                         f"of this package ({', '.join(FAMILIES)})")
    for key, (low, high) in _WHOLE_NUMBERS.items():
        text = ours[key]
        value = int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None
        if value is None or not low <= value <= high:
            raise ValueError(f"{shown}: metadata key {META_PREFIX}{key}: expected a whole number from {low} to "
                             f"{high}, got {short_repr(text)}")
    if ours["sample_rate"] != str(SAMPLE_RATE):
        raise ValueError(f"{shown}: metadata key {META_PREFIX}sample_rate: {short_repr(ours['sample_rate'])}, but "
                         f"recycle-distill students take {SAMPLE_RATE} Hz audio")
    if ours.get("dtype", "fp32") not in ONNX_DTYPES:
        raise ValueError(f"{shown}: metadata key {META_PREFIX}dtype: {short_repr(ours['dtype'])} is not a precision "
                         f"recycle-distill exports ({', '.join(ONNX_DTYPES)})")


def _check_signature(session: Any, metadata: dict[str, str], shown: str) -> None:
    """The declared inputs and outputs: our names, element types, ranks, and the sizes the
    metadata give where the graph declares them as numbers."""
    for kind, declared, wanted in (("input", session.get_inputs(), _INPUTS),
                                   ("output", session.get_outputs(), _OUTPUTS)):
        names = [arg.name for arg in declared]
        if sorted(names) != sorted(wanted):
            raise ValueError(f"{shown}: the graph's {kind}s are {short_repr(names)}; recycle-distill exports have "
                             f"{', '.join(wanted)}")
        for arg in declared:
            element, rank = wanted[arg.name]
            if arg.type != element:
                raise ValueError(f"{shown}: {kind} {short_repr(arg.name)} is {plain(arg.type, 60)}, but "
                                 f"recycle-distill exports write {element}")
            if arg.shape and len(arg.shape) != rank:  # [] (ONNX Runtime's "unknown") is checked when run
                raise ValueError(f"{shown}: {kind} {short_repr(arg.name)} has rank {len(arg.shape)}, but "
                                 f"recycle-distill exports write rank {rank} {_AXES[arg.name]}")
    shapes = {arg.name: arg.shape for arg in session.get_outputs()}
    sizes = {("hidden_states", 0): ("num_layers", "{} layers"), ("hidden_states", 3): ("hidden_dim", "width {}"),
             ("last_hidden_state", 2): ("hidden_dim", "width {}")}
    for (name, axis), (key, what) in sizes.items():
        size = shapes[name][axis] if shapes[name] else None
        if isinstance(size, int) and size >= 0 and str(size) != metadata[key]:
            raise ValueError(f"{shown}: output '{name}' has {what.format(size)}, but metadata key "
                             f"{META_PREFIX}{key} says {metadata[key]}")


class OnnxStudentUpstream(nn.Module):
    """S3PRL upstream over an ONNX Runtime session of an exported student.

    Args:
        path: the ``.onnx`` file written by ``export_onnx`` / ``recycle-distill export --format onnx``.
        family: the family the caller expects (the ``<family>_onnx`` hub entry passes its own);
            a file of another family is refused. None accepts any family.
        threads: ONNX Runtime intra-op threads, 1 to :data:`MAX_THREADS` (default:
            ``torch.get_num_threads()``).
        providers: ONNX Runtime execution providers (default: the CPU provider).
        timeout: seconds one call (the load-time probe included) may run before ONNX Runtime
            stops it with a TimeoutError; None (default) sets no limit.
        allow_any_graph: run a graph that holds what our exports never write (control flow,
            data in other files); only for a file you trust (docs/inference.md).
        chunk_seconds, overlap_seconds: run each recording in windows, as
            :class:`~recycle_distill.s3prl.upstream.StudentUpstream` does (the graph's memory is
            quadratic in a window's length; docs/inference.md §7).
    """

    def __init__(
        self,
        path: Union[str, os.PathLike],
        family: Optional[str] = None,
        *,
        threads: Optional[int] = None,
        providers: Optional[Sequence[str]] = None,
        timeout: Optional[float] = None,
        allow_any_graph: bool = False,
        chunk_seconds: Optional[float] = None,
        overlap_seconds: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.chunking = chunk_settings(chunk_seconds, overlap_seconds)
        threads = torch.get_num_threads() if threads is None else threads
        threads = check_whole_number(threads, "threads", 1, MAX_THREADS)
        self.timeout = check_seconds(timeout, "timeout")
        allow_any_graph = check_bool(allow_any_graph, "allow_any_graph")
        ort = import_onnx_package("onnxruntime")
        self._ort = ort
        self.path = os.fspath(path)
        shown = plain(self.path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{shown}: no such ONNX file")
        if not allow_any_graph:
            check_onnx_graph(self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, sess_options=options,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self.metadata = read_onnx_metadata(self.session, self.path)
        if family is not None and self.metadata["family"] != family:
            raise ValueError(f"{shown}: holds a {self.metadata['family']} student, not {plain(family, 100)}; "
                             f"use the {self.metadata['family']}_onnx entry")
        _check_signature(self.session, self.metadata, shown)
        self.family = self.metadata["family"]
        self.receptive_field = int(self.metadata["receptive_field"])
        self.downsample_rate = int(self.metadata["downsample_rate"])
        self.num_layers = int(self.metadata["num_layers"])
        self.hidden_dim = int(self.metadata["hidden_dim"])
        self.dtype = self.metadata.get("dtype", "fp32")
        self.name = f"[{self.family}_onnx]"
        # A short probe (three frames): the outputs' shapes must follow from the metadata.
        probe = self.receptive_field + 2 * self.downsample_rate
        self._run(torch.zeros(1, probe), torch.tensor([probe]))

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        return self.downsample_rate

    def forward(self, wavs: list[Tensor]) -> dict[str, Any]:
        """Run the exported student on a list of waveforms.

        Args:
            wavs: B float tensors (S_b,) at 16 kHz (any float dtype; computed in float32).

        Returns:
            ``hidden_states``: N float32 tensors (B, T, D); ``last_hidden_state``: (B, T, D);
            on the device of ``wavs[0]``.

        Raises:
            TimeoutError: the call ran longer than ``timeout``.
            ValueError: the graph's outputs do not fit its metadata.
        """
        validate_waveforms(wavs, self.receptive_field)
        device = wavs[0].device
        wavs = [wave.detach().float().cpu() for wave in wavs]
        if self.chunking is not None:
            frames = [(wave.numel() - self.receptive_field) // self.downsample_rate + 1 for wave in wavs]
            hidden_states = [layer.to(device) for layer in run_chunked_batch(
                self._run_window, wavs, frames, self.downsample_rate, self.receptive_field, self.chunking)]
            return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}
        batch, lengths = pad_waveforms(wavs)
        stacked = self._run(batch, lengths)
        hidden_states = [layer.to(device) for layer in torch.from_numpy(stacked).unbind(0)]
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}

    def _run_window(self, window: Tensor) -> list[Tensor]:
        """One (S_w,) window of a chunked call -> its N states, each (T_w, D)."""
        stacked = torch.from_numpy(self._run(window[None], torch.tensor([window.numel()])))
        return list(stacked[:, 0].unbind(0))

    def _run(self, batch: Tensor, lengths: Tensor) -> Any:
        """The session on one padded batch -> the stacked hidden states (checked), within the timeout."""
        run_options = self._ort.RunOptions()
        timer = None
        if self.timeout is not None:
            timer = threading.Timer(self.timeout, setattr, (run_options, "terminate", True))
            timer.daemon = True
            timer.start()
        try:
            outputs = self.session.run(list(OUTPUT_NAMES), {"waveforms": batch.numpy(),
                                                            "lengths": lengths.to(torch.long).numpy()}, run_options)
        except Exception:
            if run_options.terminate:
                raise TimeoutError(f"{plain(self.path)}: the graph ran longer than timeout={self.timeout:g} s "
                                   f"and was stopped") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        stacked, last, _ = outputs
        self._check_outputs(stacked, last, tuple(batch.shape))
        return stacked

    def _check_outputs(self, stacked: Any, last: Any, batch_shape: tuple[int, int]) -> None:
        """Both outputs float32 and of the shapes the metadata give for this batch."""
        import numpy as np

        size, samples = batch_shape
        frames = (samples - self.receptive_field) // self.downsample_rate + 1
        for name, array, expected in (
            ("hidden_states", stacked, (self.num_layers, size, frames, self.hidden_dim)),
            ("last_hidden_state", last, (size, frames, self.hidden_dim)),
        ):
            if not isinstance(array, np.ndarray) or array.dtype != np.float32:
                raise ValueError(f"{plain(self.path)}: output '{name}' is {getattr(array, 'dtype', type(array))}, "
                                 f"not float32")
            if tuple(array.shape) != expected:
                raise ValueError(
                    f"{plain(self.path)}: output '{name}' has shape {tuple(array.shape)} for a batch of {size} x "
                    f"{samples} samples; its metadata (num_layers {self.num_layers}, hidden_dim {self.hidden_dim}, "
                    f"receptive_field {self.receptive_field}, downsample_rate {self.downsample_rate}) give {expected}")

    def extra_repr(self) -> str:
        return f"path={self.path!r}, family={self.family}, dtype={self.dtype}"
