"""What every hub entry does, and the entries themselves, generated per family.

Each ``upstreams/<family>/hubconf.py`` only puts :func:`family_entries` into its globals:
``<family>_local``, ``<family>_url``, ``<family>``, ``<family>_onnx`` (an exported ``.onnx``
file run in ONNX Runtime) and one entry per published checkpoint of the family in
:data:`recycle_distill.checkpoint.fetch.RELEASED`. They are plain module-level functions with docstrings,
so ``torch.hub``'s rule (public callables of hubconf.py) and S3PRL's ``from ...hubconf import *``
both find them.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from recycle_distill.students.build import ConfigSource
from recycle_distill.s3prl.upstream import StudentUpstream
from recycle_distill.checkpoint.fetch import RELEASED, default_release, fetch_checkpoint, released_checkpoint

__all__ = ["load_upstream", "load_released", "load_onnx_upstream", "family_entries", "TITLES"]

TITLES = {"armhubert": "ARMHuBERT", "maskhubert": "MaskHuBERT", "starhubert": "STaRHuBERT", "fithubert": "FitHuBERT"}


def load_upstream(
    family: str,
    ckpt: Union[str, os.PathLike, None],
    model_config: Optional[ConfigSource] = None,
    refresh: bool = False,
    default_release: Optional[str] = None,
    **overrides: Any,
) -> StudentUpstream:
    """Build the ``family`` upstream from a path or URL (``refresh`` re-downloads URLs).

    Without ``ckpt`` the family's ``default_release`` is fetched from the Hub.
    """
    if ckpt is None:
        if default_release is None:
            raise ValueError(f"{family}: no checkpoint given (-k / ckpt=) and none is published on the Hub")
        return load_released(default_release, model_config, refresh, **overrides)
    return StudentUpstream(fetch_checkpoint(ckpt, refresh), model_config, family=family, **overrides)


def load_released(
    name: str, model_config: Optional[ConfigSource] = None, refresh: bool = False, **overrides: Any
) -> StudentUpstream:
    """A published checkpoint by entry name (see :data:`recycle_distill.checkpoint.fetch.RELEASED`)."""
    overrides.pop("ckpt", None)
    entry = RELEASED[name]
    path = released_checkpoint(name, refresh)
    return StudentUpstream(path, model_config or entry.preset, family=entry.family, **overrides)


def load_onnx_upstream(
    family: str,
    ckpt: Union[str, os.PathLike],
    refresh: bool = False,
    threads: Optional[int] = None,
    dtype: Optional[str] = None,
    **ignored: Any,
) -> Any:
    """The ``family`` upstream over an exported ``.onnx`` file (path or URL), run in ONNX Runtime.

    S3PRL passes ``model_config`` (meaningless here: the graph is the architecture) and
    ``refresh``; ``threads`` sets ONNX Runtime's intra-op threads (default: torch's);
    ``dtype``, when given, must be the precision the file was exported in.
    """
    from recycle_distill.inference.onnx_runtime import OnnxStudentUpstream

    ignored.pop("model_config", None)
    if ignored:
        raise TypeError(f"{family}_onnx: unexpected options {', '.join(sorted(ignored))} "
                        f"(the exported graph fixes the architecture and precision)")
    from recycle_distill.inference.precision import parse_precision

    wanted = None if dtype is None else parse_precision(dtype)
    upstream = OnnxStudentUpstream(fetch_checkpoint(ckpt, refresh), family, threads=threads)
    if wanted is not None and wanted != upstream.dtype:
        raise ValueError(f"{upstream.path}: exported in {upstream.dtype}; dtype={dtype!r} cannot change an ONNX "
                         f"file (export it again with --dtype {wanted})")
    return upstream


def family_entries(family: str, module: Optional[str] = None) -> dict[str, Any]:
    """The hub entries of ``family``: name -> function (see the module docstring).

    ``module`` is the hubconf module that publishes them (their ``__module__``).
    """
    title = TITLES[family]
    release = default_release(family)

    def local(ckpt, model_config=None, *args, **kwargs):
        return load_upstream(family, ckpt, model_config, **kwargs)

    def url(ckpt, model_config=None, refresh=False, *args, **kwargs):
        return load_upstream(family, ckpt, model_config, refresh, **kwargs)

    def default(ckpt=None, model_config=None, refresh=False, *args, **kwargs):
        return load_upstream(family, ckpt, model_config, refresh, default_release=release, **kwargs)

    def onnx(ckpt, *args, **kwargs):
        return load_onnx_upstream(family, ckpt, **kwargs)

    entries = {
        f"{family}_local": (local, f"{title} from a local checkpoint file."),
        f"{family}_url": (url, f"{title} from a URL (cached; `refresh=True` downloads again)."),
        family: (default, f"{title} from a path or URL"
                          + (f"; without one, the published {release} checkpoint." if release else ".")),
        f"{family}_onnx": (onnx, f"{title} exported to ONNX ('recycle-distill export --format onnx'), "
                                 f"run in ONNX Runtime (needs the [onnx] extra)."),
    }
    for name, entry in RELEASED.items():
        if entry.family == family:
            entries[name] = (_released_entry(name), entry.description)
    out = {}
    for name, (function, doc) in entries.items():
        function.__name__ = function.__qualname__ = name
        function.__doc__ = doc
        function.__module__ = module or f"recycle_distill.upstreams.{family}.hubconf"
        out[name] = function
    return out


def _released_entry(name: str) -> Any:
    def released(refresh=False, *args, **kwargs):
        return load_released(name, refresh=refresh, **kwargs)

    return released
