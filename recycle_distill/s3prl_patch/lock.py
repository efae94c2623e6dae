"""One patch_hub run at a time per S3PRL tree: an exclusive ``flock`` on the package folder.

A patch and a revert running together could each read a config before the other wrote it and
lose an original.  The lock is taken on the folder that holds ``hub.py`` (a directory that
already exists and is never replaced, unlike the files we rewrite through os.replace), so it
adds nothing to the tree: a reverted tree stays byte for byte what it was.  ``flock`` locks are
released by the kernel when the process dies, so a killed run never leaves the tree locked.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from .errors import RefusedError

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: no flock; runs are not serialised there)
    fcntl = None  # type: ignore[assignment]

DEFAULT_TIMEOUT = 60.0  # seconds a run waits for another one to finish


@contextlib.contextmanager
def tree_lock(folder: Path, timeout: float = DEFAULT_TIMEOUT,
              on_wait: Optional[Callable[[], None]] = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` for the body; wait up to ``timeout`` seconds.

    ``on_wait`` is called once if another run holds the lock.  Raises RefusedError when the
    lock is still held after ``timeout``.
    """
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                if time.monotonic() >= deadline:
                    raise RefusedError(f"{folder} is busy: another patch_hub.py run holds it "
                                       f"(waited {timeout:g} s); try again when it has finished") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
