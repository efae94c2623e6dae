"""One smoke task in its own process: ``python -m recycle_distill.lab.smoke.child CACHE ARGS...``.

Runs S3PRL's ``run_downstream`` through the launcher's steps (compat layer, our upstreams and
downstreams registered, S3PRL checkpoints allowed, the shipped config, ``--device cpu`` without a
GPU) with ``ARGS`` (run_downstream's options), and two changes that keep a tiny run from touching
anything else:

- S3PRL caches VoxCeleb1's file lists inside its installed package (one ``<split>.pkl`` per
  split, whatever the corpus): here they go to ``CACHE``, so a tiny corpus never shadows a real
  one and a real one's lists are never used for the tiny corpus;
- S3PRL's Speech Commands expert imports ``catalyst`` (for a distributed sampler only) at module
  level; where catalyst is not installed a stand-in is registered whose sampler refuses a
  distributed run, so a one-process KS run works without it;
- that expert reads its clips with ``torchaudio.sox_effects.apply_effects_file`` (channels 1,
  rate 16 kHz, gain -3 dB), which needs libsox (absent from many systems, removed in torchaudio
  2.9); where it cannot run, those three effects are applied with soundfile and torchaudio's
  resampler instead.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any, Sequence

from recycle_distill.s3prl.compat import apply_compat
from recycle_distill.s3prl.superb.launcher import (
    allow_s3prl_checkpoints,
    hand_over,
    plan_launch,
    register_downstreams,
    register_upstreams,
)

__all__ = ["main"]


class _NoDistributedSampler:
    """Stands in for ``catalyst.data.sampler.DistributedSamplerWrapper`` where catalyst is absent."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("a distributed Speech Commands run needs catalyst: pip install catalyst")


def _stand_in_catalyst() -> bool:
    """Register the catalyst stand-in unless catalyst is installed; True when registered."""
    if "catalyst" in sys.modules or importlib.util.find_spec("catalyst") is not None:
        return False
    names = ("catalyst", "catalyst.data", "catalyst.data.sampler")
    modules = {name: types.ModuleType(name) for name in names}
    modules["catalyst"].data = modules["catalyst.data"]
    modules["catalyst.data"].sampler = modules["catalyst.data.sampler"]
    modules["catalyst.data.sampler"].DistributedSamplerWrapper = _NoDistributedSampler
    for name in names:
        sys.modules.setdefault(name, modules[name])
    return True


def _sox_works() -> bool:
    try:
        import torchaudio.sox_effects

        torchaudio.sox_effects.effect_names()
    except Exception:  # noqa: BLE001  (libsox missing: OSError; torchaudio 2.9 stub: RuntimeError)
        return False
    return True


def apply_effects_without_sox(path: str, effects: Sequence[Sequence[str]]) -> tuple[Any, int]:
    """``apply_effects_file`` for the effects S3PRL's Speech Commands uses: ``channels``, ``rate``, ``gain``.

    Returns:
        ((C, S) float32 tensor, sample rate), as torchaudio does.
    """
    import numpy as np
    import soundfile
    import torch
    import torchaudio.functional

    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (S, C)
    wave = torch.from_numpy(np.ascontiguousarray(samples.T))  # (C, S)
    for effect in effects:
        name, value = effect[0], effect[1]
        if name == "channels" and value == "1":
            wave = wave.mean(dim=0, keepdim=True)
        elif name == "rate":
            wave = torchaudio.functional.resample(wave, rate, int(value)) if int(value) != rate else wave
            rate = int(value)
        elif name == "gain":
            wave = wave * 10 ** (float(value) / 20)
        else:
            raise RuntimeError(f"sox effect {list(effect)} needs libsox (only channels 1, rate and gain run without it)")
    return wave, rate


def _stand_in_sox() -> bool:
    """Give S3PRL's Speech Commands dataset the soundfile effects unless sox runs; True when given."""
    if _sox_works():
        return False
    import s3prl.downstream.speech_commands.dataset as dataset

    dataset.apply_effects_file = apply_effects_without_sox
    return True


def main(argv: Sequence[str]) -> int:
    """``argv``: the VoxCeleb1 cache folder, then run_downstream's options; returns its exit status."""
    if not argv:
        print("usage: python -m recycle_distill.lab.smoke.child CACHE_DIR [run_downstream options]", file=sys.stderr)
        return 2
    cache, options = argv[0], list(argv[1:])
    apply_compat()  # before anything imports torchaudio through s3prl
    plan = plan_launch(options)
    register_upstreams(dtype=plan.upstream_dtype)
    register_downstreams()
    allow_s3prl_checkpoints()
    stand_ins = [name for name, given in (("catalyst", _stand_in_catalyst()), ("sox", _stand_in_sox())) if given]
    import s3prl.downstream.voxceleb1.dataset as voxceleb1

    voxceleb1.CACHE_PATH = cache.rstrip("/") + "/"
    print(f"[recycle-distill superb-smoke] run_downstream {' '.join(plan.argv[:12])} ...; device: {plan.device_note}"
          + (f"; stand-ins: {', '.join(stand_ins)}" if stand_ins else ""), flush=True)
    return hand_over(plan.argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
