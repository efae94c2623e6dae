"""The offline end-to-end demo behind ``recycle-distill demo`` (see :mod:`.pipeline`)."""

from recycle_distill.lab.demo.pipeline import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
