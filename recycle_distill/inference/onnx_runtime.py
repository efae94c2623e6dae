"""Run an exported student (:func:`~recycle_distill.inference.onnx_export.export_onnx`) in ONNX Runtime.

:class:`OnnxStudentUpstream` has the call and outputs of :class:`recycle_distill.s3prl.upstream.StudentUpstream`
(a list of 1-D waveforms in, ``hidden_states`` N x (B, T, D) and ``last_hidden_state`` out,
``get_downsample_rates``), so S3PRL's Featurizer, a frozen-upstream SUPERB run or a user's
pipeline takes it in place of the PyTorch upstream. It is an ``nn.Module`` without parameters:
``.to()``, ``.eval()``, ``.train()`` are harmless, and outputs come back as float32 tensors on
the device of the input waveforms (the session itself runs on the CPU provider).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from recycle_distill.students.waveforms import validate_waveforms
from recycle_distill.students.blocks.masks import pad_waveforms
from recycle_distill.inference.onnx_export import META_PREFIX, ONNX_FORMAT_VERSION, import_onnx_package

logger = logging.getLogger(__name__)

__all__ = ["OnnxStudentUpstream", "read_onnx_metadata"]

_REQUIRED_KEYS = ("family", "onnx_version", "num_layers", "downsample_rate", "receptive_field", "sample_rate")


def read_onnx_metadata(session: Any, path: str) -> dict[str, str]:
    """Our ``recycle_distill.*`` metadata of a loaded session (prefix removed), checked for format.

    Raises:
        ValueError: the file lacks our metadata or has another export version.
    """
    props = session.get_modelmeta().custom_metadata_map
    ours = {key[len(META_PREFIX):]: value for key, value in props.items() if key.startswith(META_PREFIX)}
    if not ours:
        raise ValueError(f"{path}: not a recycle-distill ONNX export (no {META_PREFIX}* metadata); "
                         f"write it with 'recycle-distill export ... --format onnx'")
    version = ours.get("onnx_version")
    if version != str(ONNX_FORMAT_VERSION):
        raise ValueError(f"{path}: ONNX export version {version!r}, this package reads version "
                         f"{ONNX_FORMAT_VERSION}; export it again with this version")
    missing = [key for key in _REQUIRED_KEYS if key not in ours]
    if missing:
        raise ValueError(f"{path}: its metadata lacks {', '.join(META_PREFIX + key for key in missing)}")
    return ours


class OnnxStudentUpstream(nn.Module):
    """S3PRL upstream over an ONNX Runtime session of an exported student.

    Args:
        path: the ``.onnx`` file written by ``export_onnx`` / ``recycle-distill export --format onnx``.
        family: the family the caller expects (the ``<family>_onnx`` hub entry passes its own);
            a file of another family is refused. None accepts any family.
        threads: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).
        providers: ONNX Runtime execution providers (default: the CPU provider).
    """

    def __init__(
        self,
        path: Union[str, os.PathLike],
        family: Optional[str] = None,
        *,
        threads: Optional[int] = None,
        providers: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__()
        ort = import_onnx_package("onnxruntime")
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads) if threads is not None else torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, sess_options=options,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self.metadata = read_onnx_metadata(self.session, self.path)
        if family is not None and self.metadata["family"] != family:
            raise ValueError(f"{self.path}: holds a {self.metadata['family']} student, not {family}; "
                             f"use the {self.metadata['family']}_onnx entry")
        self.family = self.metadata["family"]
        self.receptive_field = int(self.metadata["receptive_field"])
        self.downsample_rate = int(self.metadata["downsample_rate"])
        self.dtype = self.metadata.get("dtype", "fp32")
        self.name = f"[{self.family}_onnx]"

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        return self.downsample_rate

    def forward(self, wavs: list[Tensor]) -> dict[str, Any]:
        """Run the exported student on a list of waveforms.

        Args:
            wavs: B float tensors (S_b,) at 16 kHz (any float dtype; computed in float32).

        Returns:
            ``hidden_states``: N float32 tensors (B, T, D); ``last_hidden_state``: (B, T, D);
            on the device of ``wavs[0]``.
        """
        validate_waveforms(wavs, self.receptive_field)
        device = wavs[0].device
        batch, lengths = pad_waveforms([wave.detach().float().cpu() for wave in wavs])
        stacked, last, _ = self.session.run(
            None, {"waveforms": batch.numpy(), "lengths": lengths.to(torch.long).numpy()})
        hidden_states = [layer.to(device) for layer in torch.from_numpy(stacked).unbind(0)]
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}

    def extra_repr(self) -> str:
        return f"path={self.path!r}, family={self.family}, dtype={self.dtype}"
