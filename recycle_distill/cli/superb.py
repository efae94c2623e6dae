"""Run S3PRL's run_downstream.py with the recycle-distill upstreams registered.

  recycle-distill superb -m train -n sid_arm -u armhubert -d voxceleb1 -k ARMHuBERT-960h.ckpt \\
      -o "config.downstream_expert.datarc.file_path=/data/VoxCeleb1"
  recycle-distill superb -m evaluate -e result/downstream/sid_arm/dev-best.ckpt

Every option is S3PRL's run_downstream.py option and reaches it unchanged. Without -c, our
tweaked SUPERB config for -d is used (-d ctc needs -c: ctc_libriphone.yaml for PR, ctc_snips.yaml
for SF); without --device, cpu when no GPU is present. Stdout is appended to
<expdir>/superb.log (--no-log: not). Same as: python -m recycle_distill superb ...
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any, Optional, Sequence, TextIO

from recycle_distill.s3prl.compat import DISABLE_ENV, apply_compat, compat_needed
from recycle_distill.s3prl.superb.launcher import (
    HEADER,
    allow_s3prl_checkpoints,
    hand_over,
    hub_entries,
    plan_launch,
    register_downstreams,
    register_upstreams,
    run_line,
)

PASS_THROUGH = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("options", nargs=argparse.REMAINDER,
                        help="run_downstream.py options (-m, -u, -d, -k, -g, -c, -o, -e, -n/-p, -f, ...) and --no-log")


def run_argv(argv: Sequence[str]) -> int:
    """Hand ``argv`` to the launcher; returns run_downstream's exit status."""
    return main(list(argv))


def run(args: argparse.Namespace) -> int:
    return run_argv(args.options)


class _Tee:
    """A text stream that writes to ``stream`` and appends to ``log``."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _compat_line(applied: list[str]) -> str:
    """One phrase saying whether the compat layer was applied, and why (not)."""
    try:
        from importlib.metadata import version

        torchaudio = version("torchaudio")
    except Exception:  # not installed
        torchaudio = "?"
    if applied:
        return f"compat layer applied for torchaudio {torchaudio}: {'; '.join(applied)}"
    if compat_needed():
        return f"compat layer: already active for torchaudio {torchaudio}"
    disabled = os.environ.get(DISABLE_ENV, "") not in ("", "0")
    reason = f"disabled by {DISABLE_ENV}" if disabled else f"not needed (torchaudio {torchaudio})"
    return f"compat layer: {reason}"


USAGE = """\
usage: recycle-distill superb [run_downstream.py options] [--no-log]
       python -m recycle_distill superb [run_downstream.py options] [--no-log]

Runs S3PRL's run_downstream.py with the recycle-distill upstreams registered
(-u armhubert|maskhubert|starhubert|fithubert[_local|_url] or a published entry), our
tweaked SUPERB config when -c is not given, and --device cpu when no GPU is present.
Example:
  recycle-distill superb -m train -n sid_arm -u armhubert -d voxceleb1 -k ARMHuBERT-960h.ckpt \\
      -o "config.downstream_expert.datarc.file_path=/data/VoxCeleb1"
--no-log: do not append stdout to <expdir>/superb.log.
--upstream_dtype fp32|bf16|int8: our upstreams' inference precision (default fp32).
S3PRL's own options follow.
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The launcher's command line; returns the exit status of run_downstream."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        register_upstreams()
        return hand_over(["-h"])
    applied = apply_compat()  # before anything imports torchaudio through s3prl
    try:
        plan = plan_launch(argv)
    except ValueError as err:
        print(f"{HEADER} error: {err}", file=sys.stderr)
        return 2
    names = register_upstreams(dtype=plan.upstream_dtype)
    register_downstreams()
    allowed = allow_s3prl_checkpoints()
    import s3prl

    families: dict[str, int] = {}
    for entry in hub_entries().values():
        family = entry.__module__.split(".")[-2]
        families[family] = families.get(family, 0) + 1
    log_file: Optional[TextIO] = None
    saved_stdout = sys.stdout
    if plan.log_path is not None:
        plan.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(plan.log_path, "a", encoding="utf-8")
        sys.stdout = _Tee(saved_stdout, log_file)
    try:
        counts = ", ".join(f"{family} {count}" for family, count in families.items())
        print(run_line(plan))
        print(f"{HEADER} registered {len(names)} upstream entries in s3prl.hub ({counts}) of "
              f"s3prl {getattr(s3prl, '__version__', '?')} at {os.path.dirname(s3prl.__file__)}; {_compat_line(applied)}")
        print(f"{HEADER} config: {plan.config or '-'} ({plan.config_note or 'S3PRL default'})"
              + (f"; added override {', '.join(plan.overrides)}" if plan.overrides else "")
              + f"; device: {plan.device_note}; log: {plan.log_path or 'off'}"
              + f"; upstream dtype: {plan.upstream_dtype or 'fp32'}")
        print(f"{HEADER} handing over to s3prl.run_downstream (weights-only checkpoint loads allow "
              f"{', '.join(allowed) or 'n/a'}) with your options"
              + (f" + {shlex.join(plan.added)}" if plan.added else " unchanged"), flush=True)
        return hand_over(plan.argv)
    finally:
        sys.stdout = saved_stdout
        if log_file is not None:
            log_file.close()
