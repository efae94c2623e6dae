"""What a measurement ran on: the CPU, its cores, torch's threads and versions, the load."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import torch

__all__ = ["cpu_model", "machine", "describe_machine"]


def cpu_model() -> str:
    """``lscpu``'s model name (or the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_1min_at_start": round(load, 2),
    }


def describe_machine(info: dict[str, Any]) -> str:
    """One line: ``AMD EPYC, 2 logical cores (torch: 2 threads), torch 2.8.0, 1-min load 3.1``."""
    return (f"{info['cpu']}, {info['cores']} logical cores (torch: {info['threads']} threads), "
            f"torch {info['torch']}, 1-min load {info['load_1min_at_start']}")
