"""Run a few SUPERB tasks for a few steps on a make-data folder and report one row per task.

Each task runs in its own process (:mod:`recycle_distill.lab.smoke.child`), so one failure
never stops the others, and its expdir keeps S3PRL's logs. The rows read back what S3PRL wrote:
the training loss from the TensorBoard scalars (first and last logged step), the dev metric from
its logs (``log.log`` and the captured stdout, as ``recycle-distill superb-score`` reads them).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from recycle_distill.lab.owned_folder import check_owned_folder, marker_block
from recycle_distill.lab.smoke.events import read_scalars
from recycle_distill.lab.smoke.tasks import TASKS, SmokeTask
from recycle_distill.s3prl.superb.launcher import LOG_NAME
from recycle_distill.s3prl.superb.logs import parse_log
from recycle_distill.util.atomic import atomic_write_folder
from recycle_distill.util.messages import plain

__all__ = ["SmokeRow", "run_smoke", "read_row", "format_table", "MARKER"]

PathLike = Union[str, "os.PathLike[str]"]
MARKER = "smoke.json"
KIND = "superb-smoke"
FORMAT_VERSION = 1
TABLE = "smoke.txt"
REASON_LIMIT = 200
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)(:|$)")


@dataclass
class SmokeRow:
    """One task's result.

    Attributes:
        task: the SUPERB name.
        steps: the last step with a logged training loss (None: none logged).
        loss_first, loss_last: the training loss at the first and that last step.
        metric: the dev metric's name (``acc``, ``wer``); ``dev``: its value (None: not found).
        seconds: wall time of the task's process.
        ok: trained and evaluated with finite numbers; else ``reason`` says why not (one line).
    """

    task: str
    steps: Optional[int] = None
    loss_first: Optional[float] = None
    loss_last: Optional[float] = None
    metric: str = ""
    dev: Optional[float] = None
    seconds: float = 0.0
    ok: bool = False
    reason: str = ""


def _last_line(text: str) -> str:
    """The last line where a Python error names itself (progress bars may follow it), else the
    last non-empty line; bounded."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.match(line)]
    chosen = errors[-1] if errors else (lines[-1] if lines else "")
    return plain(chosen, REASON_LIMIT)


def read_row(task: SmokeTask, expdir: Path, seconds: float, returncode: int, stderr: str) -> SmokeRow:
    """What ``expdir`` says about ``task``'s run (a process that ended with ``returncode``)."""
    row = SmokeRow(task.name, metric=task.metric, seconds=seconds)
    losses = read_scalars(expdir, task.loss_tag) if expdir.is_dir() else []
    if losses:
        row.steps, row.loss_first, row.loss_last = losses[-1][0], losses[0][1], losses[-1][1]
    logs = [path for path in (expdir / "log.log", expdir / LOG_NAME) if path.is_file()]
    found = [item for path in logs for item in parse_log(path)
             if item.split == task.dev_split and item.metric == task.metric]
    if found:
        row.dev = found[-1].value
    if returncode != 0:
        row.reason = f"exit {returncode}: {_last_line(stderr) or 'no error message'}"
    elif not losses:
        row.reason = f"no training loss logged ({task.loss_tag})"
    elif row.dev is None:
        row.reason = f"no {task.dev_split} {task.metric} in the logs"
    elif not all(math.isfinite(value) for value in (row.loss_first, row.loss_last, row.dev)):
        row.reason = "a loss or the dev metric is not finite"
    row.ok = not row.reason
    return row


def _missing(task: SmokeTask, data: Path) -> Optional[str]:
    absent = [need for need in task.needs if not (data / need).exists()]
    if absent:
        return f"{plain(data / absent[0])} is missing (recycle-distill make-data writes it)"
    return None


def _run_task(task: SmokeTask, data: Path, expdir: Path, upstream: Sequence[str], steps: int,
              timeout: float, device: Optional[str]) -> SmokeRow:
    missing = _missing(task, data)
    if missing:
        return SmokeRow(task.name, metric=task.metric, reason=missing)
    expdir.mkdir(parents=True)
    command = [sys.executable, "-m", "recycle_distill.lab.smoke.child", str(expdir / "voxceleb1_cache"),
               "-m", "train", "-p", str(expdir), "-d", task.downstream, *upstream,
               "-o", ",,".join(task.overrides(data, steps)), "--no-log"]
    if device:
        command += ["--device", device]
    started = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as stop:
        (expdir / LOG_NAME).write_text(_text(stop.stdout), encoding="utf-8")
        return SmokeRow(task.name, metric=task.metric, seconds=time.monotonic() - started,
                        reason=f"timed out after {timeout:g} s")
    seconds = time.monotonic() - started
    (expdir / LOG_NAME).write_text(result.stdout, encoding="utf-8")
    (expdir / "stderr.log").write_text(result.stderr, encoding="utf-8")
    return read_row(task, expdir, seconds, result.returncode, result.stderr)


def _text(output: Union[str, bytes, None]) -> str:
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else (output or "")


def run_smoke(upstream: Sequence[str], data: PathLike, out: PathLike, tasks: Sequence[str] = tuple(TASKS),
              steps: int = 4, timeout: float = 600.0, device: Optional[str] = None) -> list[SmokeRow]:
    """Train each of ``tasks`` for ``steps`` steps on the make-data folder ``data``.

    Args:
        upstream: run_downstream's upstream options (``-u NAME``, ``-k CKPT``, ``-g CONFIG`` ...).
        out: the folder for the expdirs (``<out>/<task>``), ``smoke.txt`` and ``smoke.json``;
            written beside it and swapped in at the end; missing, empty or an earlier smoke run.
        timeout: seconds per task.
        device: run_downstream's ``--device`` (default: the launcher's choice).

    Returns:
        one :class:`SmokeRow` per task, in the order given.
    """
    unknown = [name for name in tasks if name not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown smoke task {unknown[0]!r}; choose from {', '.join(TASKS)}" if unknown
                         else f"no smoke task chosen; choose from {', '.join(TASKS)}")
    data = Path(data).resolve()
    if not data.is_dir():
        raise FileNotFoundError(f"{plain(data)}: no such folder (write one with recycle-distill make-data)")
    check_owned_folder(out, MARKER, KIND, (*TASKS, TABLE))
    rows: list[SmokeRow] = []

    def write(temp: str) -> None:
        for name in tasks:
            rows.append(_run_task(TASKS[name], data, Path(temp) / name, upstream, steps, timeout, device))
        (Path(temp) / TABLE).write_text(format_table(rows) + "\n", encoding="utf-8")
        record = {"recycle_distill": marker_block(KIND, FORMAT_VERSION), "upstream": list(upstream),
                  "data": str(data), "steps": steps, "rows": [asdict(row) for row in rows]}
        (Path(temp) / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    atomic_write_folder(out, write)
    return rows


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_table(rows: Sequence[SmokeRow]) -> str:
    """The rows as a plain-text table: task, steps, train loss first -> last, dev metric, wall time, result."""
    header = ("task", "steps", "train loss first -> last", "dev metric", "time", "result")
    lines = [header]
    for row in rows:
        loss = "-" if row.loss_first is None else f"{_number(row.loss_first)} -> {_number(row.loss_last)}"
        dev = "-" if row.dev is None else f"{row.metric} {_number(row.dev)}"
        lines.append((row.task, "-" if row.steps is None else str(row.steps), loss, dev, f"{row.seconds:.1f} s",
                      "ok" if row.ok else f"failed: {row.reason}"))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1]
                     for line in lines)
