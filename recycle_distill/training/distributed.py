"""torchrun integration: process group, device, and the few collective helpers the loop needs."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Mapping, Union

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = ["DistributedContext"]


@dataclass
class DistributedContext:
    """Where this process sits: rank, world size, device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistributedContext":
        """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK and start the process group if needed.

        CUDA uses NCCL and one GPU per local rank; CPU uses gloo (multi-process CPU runs and tests).
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            device = f"cuda:{local_rank}"
        resolved = torch.device(device)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        if world_size > 1 and not dist.is_initialized():
            backend = "nccl" if resolved.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            logger.info("rank %d/%d on %s (%s)", rank, world_size, resolved, backend)
        return cls(rank, world_size, local_rank, resolved)

    def mean(self, values: Mapping[str, Union[float, torch.Tensor]]) -> dict[str, float]:
        """Average named numbers (floats or 0-d tensors) over ranks in one all-reduce.

        Returns plain floats; this is the only device-to-host copy of the values, so tensors
        accumulated on a GPU cost one synchronisation per call, not one per value.
        """
        names = sorted(values)
        stacked = torch.stack([torch.as_tensor(values[name], dtype=torch.float64, device=self.device).reshape(())
                               for name in names]) if names else torch.zeros(0, dtype=torch.float64)
        if self.enabled and names:
            dist.all_reduce(stacked)
            stacked = stacked / self.world_size
        return dict(zip(names, stacked.tolist()))

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(tensor)
        return bool(tensor.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
