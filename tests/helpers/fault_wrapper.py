"""Test-only: run ``recycle-distill train`` with a crash injected (the library has no hook for it).

    python tests/helpers/fault_wrapper.py kill:<micro-batch> -c conf.yaml ...   # SIGKILL after that micro-batch's backward
    python tests/helpers/fault_wrapper.py save:<step> -c conf.yaml ...          # SIGKILL halfway through writing step's checkpoint

Micro-batches are counted from 1 in this process (a fresh run counts as the trainer does).
"""

from __future__ import annotations

import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str) -> None:
    """Patch the trainer modules so that ``fault`` happens."""
    from recycle_distill.training import state, trainer

    kind, _, number = fault.partition(":")
    target = int(number)
    if kind == "kill":
        original = trainer._accumulate  # called once per micro-batch, right after its backward
        calls = [0]

        def accumulate_then_maybe_die(*args, **kwargs):
            original(*args, **kwargs)
            calls[0] += 1
            if calls[0] == target:
                _die()

        trainer._accumulate = accumulate_then_maybe_die
    elif kind == "save":
        original_write = state.atomic_write
        name = f"step-{target:08d}.pt"

        def write_half_then_die(path, write):
            if os.path.basename(path) != name:
                return original_write(path, write)

            def dying(temp_path):
                write(temp_path)
                size = os.path.getsize(temp_path)
                with open(temp_path, "r+b") as handle:
                    handle.truncate(size // 2)  # a half-written temp file, as a crash leaves it
                _die()

            return original_write(path, dying)

        state.atomic_write = write_half_then_die
    else:
        raise SystemExit(f"unknown fault {fault!r}: kill:<micro-batch> or save:<step>")


if __name__ == "__main__":
    install(sys.argv[1])
    from recycle_distill.cli import main

    sys.exit(main(["train", *sys.argv[2:]]))
