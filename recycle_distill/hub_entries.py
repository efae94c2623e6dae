"""What every hub entry does, so each ``upstreams/<family>/hubconf.py`` stays one line per entry."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from .builder import ConfigSource
from .expert import StudentUpstream
from .hub import RELEASED, fetch_checkpoint, released_checkpoint

__all__ = ["load_upstream", "load_released"]


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
    """A published checkpoint by entry name (see :data:`recycle_distill.hub.RELEASED`)."""
    overrides.pop("ckpt", None)
    entry = RELEASED[name]
    path = released_checkpoint(name, refresh)
    return StudentUpstream(path, model_config or entry.preset, family=entry.family, **overrides)
