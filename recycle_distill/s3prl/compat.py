"""Version-gated compatibility layer so s3prl 0.4.18 runs on torchaudio >= 2.9.

torchaudio 2.9 removed ``set_audio_backend``, ``sox_effects`` and ``info``, made ``load``
depend on torchcodec, and PyPI's CUDA build of its C++ extension does not load beside
a CPU torch. s3prl 0.4.18 touches all of these at import time.

Nothing here runs when the library is imported: only our own entry points (the SUPERB
launcher, the hub entries, the trainer) call :func:`apply_compat`, and only when the
installed torchaudio needs it. Set ``RECYCLE_DISTILL_NO_COMPAT=1`` to switch it off.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
from typing import Optional

logger = logging.getLogger(__name__)

__all__ = ["apply_compat", "compat_needed", "DISABLE_ENV"]

DISABLE_ENV = "RECYCLE_DISTILL_NO_COMPAT"
_applied: Optional[list[str]] = None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _installed_torchaudio_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("torchaudio")
    except Exception:  # not installed
        return None


def compat_needed() -> bool:
    """True when torchaudio >= 2.9 is installed and the layer is not disabled."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return False
    installed = _installed_torchaudio_version()
    return installed is not None and _version_tuple(installed) >= (2, 9)


def apply_compat() -> list[str]:
    """Patch torchaudio's removed APIs for s3prl, once; returns the list of patches applied.

    Must run before ``s3prl`` is imported. A no-op (returns ``[]``) on torchaudio < 2.9 or
    when ``RECYCLE_DISTILL_NO_COMPAT`` is set.
    """
    global _applied
    if _applied is not None:
        return _applied
    if not compat_needed():
        _applied = []
        return _applied
    applied: list[str] = []
    torchaudio = _import_torchaudio(applied)
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda *args, **kwargs: None
        applied.append("set_audio_backend (no-op)")
    try:
        importlib.import_module("torchaudio.sox_effects")
    except ImportError:
        sox = types.ModuleType("torchaudio.sox_effects")

        def _sox_removed(*args, **kwargs):
            raise RuntimeError("torchaudio.sox_effects was removed in torchaudio 2.9; use torchaudio 2.8 for it")

        sox.apply_effects_tensor = sox.apply_effects_file = sox.effect_names = _sox_removed
        sys.modules["torchaudio.sox_effects"] = sox
        torchaudio.sox_effects = sox
        applied.append("sox_effects (stub that raises on use)")
    if not _torchcodec_works():
        torchaudio.load = _soundfile_load
        torchaudio.info = _soundfile_info
        applied.append("load/info via soundfile")
    logger.info("torchaudio %s compat layer applied: %s", torchaudio.__version__, "; ".join(applied))
    _applied = applied
    return applied


def _import_torchaudio(applied: list[str]):
    try:
        import torchaudio

        return torchaudio
    except OSError:
        # A CUDA torchaudio beside a CPU torch: its C++ extension cannot load. The pure-Python
        # parts s3prl needs (functional, compliance.kaldi, transforms) work without it.
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        stub = types.ModuleType("torchaudio._extension")
        stub._IS_TORCHAUDIO_EXT_AVAILABLE = False
        stub._IS_ALIGN_AVAILABLE = False

        def _unavailable(*args, **kwargs):
            raise RuntimeError("torchaudio's C++ extension is unavailable (CUDA torchaudio beside CPU torch)")

        stub.fail_if_no_align = lambda func: _unavailable
        stub._load_lib = lambda lib: False
        stub._check_cuda_version = lambda: None
        sys.modules["torchaudio._extension"] = stub
        applied.append("C++ extension stub")
        import torchaudio

        return torchaudio


def _torchcodec_works() -> bool:
    try:
        importlib.import_module("torchcodec.decoders")
        return True
    except Exception:
        return False


def _soundfile_load(uri, frame_offset=0, num_frames=-1, normalize=True, channels_first=True,
                    format=None, buffer_size=4096, backend=None):
    """torchaudio.load's signature, read with soundfile (float32, (C, S) by default)."""
    import soundfile
    import torch

    stop = None if num_frames < 0 else frame_offset + num_frames
    data, sample_rate = soundfile.read(uri, start=frame_offset, stop=stop, dtype="float32", always_2d=True)
    wave = torch.from_numpy(data)
    return (wave.T.contiguous() if channels_first else wave), sample_rate


class _AudioInfo:
    def __init__(self, sample_rate: int, num_frames: int, num_channels: int) -> None:
        self.sample_rate, self.num_frames, self.num_channels = sample_rate, num_frames, num_channels

    def __repr__(self) -> str:
        return f"AudioInfo(sample_rate={self.sample_rate}, num_frames={self.num_frames}, num_channels={self.num_channels})"


def _soundfile_info(uri, format=None, buffer_size=4096, backend=None) -> _AudioInfo:
    import soundfile

    info = soundfile.info(uri)
    return _AudioInfo(info.samplerate, info.frames, info.channels)
