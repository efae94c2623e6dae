"""Tensors derived from parameters (fused, folded, re-laid-out), rebuilt when a source changes.

A fast block keeps e.g. the q/k/v weights as one matrix. The parameters stay the truth
(the state dict is unchanged), so a derived copy is keyed on each source's storage,
version counter, device and dtype: in-place updates bump the version, ``.to()`` and
``load_state_dict`` change the storage or the version, and any of them rebuilds it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn


def derived_tensor(module: nn.Module, name: str, sources: Sequence[Tensor], build: Callable[[], Tensor]) -> Tensor:
    """``build()``'s result, cached on ``module`` under ``name`` while ``sources`` are unchanged.

    The cache is a plain attribute (not a buffer), so it never enters the state dict.
    """
    # Inference tensors (made under inference_mode) carry no version counter.
    key = tuple((t.data_ptr(), -1 if t.is_inference() else t._version, t.device, t.dtype) for t in sources)
    cached = getattr(module, name, None)
    if cached is None or cached[0] != key:
        # A normal tensor even under inference_mode, so later no_grad calls may use it too.
        with torch.inference_mode(False), torch.no_grad():
            cached = (key, build())
        setattr(module, name, cached)
    return cached[1]


def fast_path_applies(x: Tensor) -> bool:
    """Whether an inference fast path may run: CPU tensors, no autograd.

    Fast blocks fall back to the plain block otherwise, so a swapped model still trains
    and runs on GPUs with the plain semantics.
    """
    return x.device.type == "cpu" and not torch.is_grad_enabled()
