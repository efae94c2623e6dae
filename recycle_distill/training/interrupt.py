"""Ctrl-C while training: finish the optimizer step under way, save a checkpoint, stop.

A checkpoint is only consistent between optimizer steps (the sampler position, the RNG states
and the weights all belong to one step), so the first SIGINT only asks the loop to stop at the
next step boundary; the trainer saves there and the command prints how to resume. A second
Ctrl-C stops at once, as Ctrl-C always did (the last checkpoint on disk is intact). DataLoader
workers ignore SIGINT (:func:`ignore_sigint`), or the terminal's Ctrl-C, which reaches the
whole process group, would end them under the loop that still needs their batches.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Optional

logger = logging.getLogger(__name__)

__all__ = ["StopRequest", "ignore_sigint"]


def ignore_sigint(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: the worker leaves Ctrl-C to the training process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """While entered (in the main thread), the first SIGINT sets :attr:`requested` instead of raising.

    Usage::

        with StopRequest() as stop:
            for step in ...:
                ...
                if stop.requested:
                    save(); break
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Ctrl-C: stopping after this optimizer step and saving a checkpoint "
                       "(press Ctrl-C again to stop at once without saving)")

    def __exit__(self, kind: Optional[type], error: Optional[BaseException], trace: Optional[TracebackType]) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
