"""The SUPERB Overall score, from per-task results or from S3PRL's experiment logs.

Overall (as in the Recycle-and-Distill and STaR papers) is the mean of 11 numbers: PR PER,
KS acc, IC acc, SID acc, ER acc, ASR WER, QbE MTWV, SF F1, SF CER, ASV EER and SD DER, with
every error rate turned into ``100 - x`` and QbE's MTWV into ``100 * MTWV``. All values are in
the papers' units: percentages, except MTWV (0-1).

Results come from

- a YAML file: ``{model: {task: value}}`` or a flat ``{task: value}`` (with an optional
  ``model:`` key);
- a CSV file: one row per model, a ``model`` column and one column per task (blank: missing);
- S3PRL experiment directories (or folders holding them, or single ``*.log`` files), read by
  :mod:`.logs`: the task
  comes from the ``args_*.yaml`` run_downstream writes, the metric from ``log.log`` (KS, IC, SID,
  ER; ``-m evaluate`` writes its result there "at step 0"), from ``superb.log`` (what ``recycle-distill superb`` appends of S3PRL's stdout) or from any
  other ``*.log`` holding S3PRL's stdout (e.g. ``... | tee test.log``).

For a log-derived value the test split is preferred from a ``-m evaluate`` run, then the test
evaluation at the step where dev was best (``log.log``), then the last test evaluation during
training; each value says where it came from. QbE's MTWV is computed by the QUESST 2014
scoring tool outside S3PRL, so it never comes from a log: give it in a YAML/CSV file.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import yaml

from recycle_distill.util.messages import plain, short_repr
from recycle_distill.util.safe_yaml import safe_load_bounded


logger = logging.getLogger(__name__)

__all__ = [
    "TASKS",
    "TASK_KEYS",
    "ModelResults",
    "OverallScore",
    "format_table",
    "load_paper_results",
    "overall",
    "read_table",
    "task_score",
]

PathLike = Union[str, os.PathLike]
PAPER_RESULTS = Path(__file__).resolve().parent / "paper_results.csv"


@dataclass(frozen=True)
class Task:
    """One of the 11 numbers of the SUPERB Overall score."""

    key: str
    title: str
    kind: str  # "higher" (acc, F1), "error" (100 - x), "mtwv" (100 * x)
    downstream: str  # S3PRL's -d
    metric: str  # what S3PRL prints / logs
    log_scale: float  # log value * log_scale = value in the papers' unit
    test_split: str = "test"


TASKS: tuple[Task, ...] = (
    Task("PR", "PR PER", "error", "ctc", "per", 100.0),
    Task("KS", "KS acc", "higher", "speech_commands", "acc", 100.0),
    Task("IC", "IC acc", "higher", "fluent_commands", "acc", 100.0),
    Task("SID", "SID acc", "higher", "voxceleb1", "acc", 100.0),
    Task("ER", "ER acc", "higher", "emotion", "acc", 100.0),
    # S3PRL's asr expert already prints WER in percent.
    Task("ASR", "ASR WER", "error", "asr", "wer", 1.0, "test-clean"),
    Task("QbE", "QbE MTWV", "mtwv", "quesst14_dtw", "mtwv", 1.0),
    Task("SF_F1", "SF F1", "higher", "ctc", "slot_type_f1", 100.0),
    Task("SF_CER", "SF CER", "error", "ctc", "slot_value_cer", 100.0),
    Task("ASV", "ASV EER", "error", "sv_voxceleb1", "EER", 100.0),
    Task("SD", "SD DER", "error", "diarization", "der", 100.0),
)
TASK_KEYS: tuple[str, ...] = tuple(task.key for task in TASKS)
TASK_BY_KEY = {task.key: task for task in TASKS}
_ALIASES = {
    "PER": "PR", "KWS": "KS", "ACC_KS": "KS", "WER": "ASR", "MTWV": "QbE", "QBE": "QbE",
    "SF-F1": "SF_F1", "SFF1": "SF_F1", "F1": "SF_F1", "SF-CER": "SF_CER", "SFCER": "SF_CER", "CER": "SF_CER",
    "EER": "ASV", "SV": "ASV", "DER": "SD",
}
_NOT_TASKS = {"MODEL", "NAME", "OVERALL", "PARAMS", "NOTE", "NOTES"}


def canonical_task(name: str) -> Optional[str]:
    """The task key for a column/key name (case-insensitive, '-', ' ' or '_'), None for non-task columns.

    Raises:
        ValueError: an unknown name.
    """
    text = str(name).strip()
    upper = text.upper().replace(" ", "_")
    if upper in _NOT_TASKS:
        return None
    for key in TASK_KEYS:
        if upper == key.upper():
            return key
    alias = _ALIASES.get(upper) or _ALIASES.get(upper.replace("_", "-"))
    if alias is None:
        raise ValueError(f"unknown SUPERB task {name!r}; expected one of {', '.join(TASK_KEYS)}")
    return alias


def task_score(key: str, value: float) -> float:
    """The task's contribution to Overall: error rates as 100 - x, QbE as 100 * MTWV."""
    kind = TASK_BY_KEY[key].kind
    if kind == "error":
        return 100.0 - value
    if kind == "mtwv":
        return 100.0 * value
    return value


@dataclass(frozen=True)
class OverallScore:
    """Overall over the tasks present: ``complete`` only when all 11 are."""

    value: Optional[float]
    present: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing

    def label(self, digits: int = 2) -> str:
        """``78.12``, ``partial 65.30 (4/11)`` or ``-``."""
        if self.value is None:
            return "-"
        if self.complete:
            return f"{self.value:.{digits}f}"
        return f"partial {self.value:.{digits}f} ({len(self.present)}/{len(TASK_KEYS)})"


def overall(results: Mapping[str, Optional[float]]) -> OverallScore:
    """SUPERB Overall from ``{task key: value in the papers' units}`` (None or absent: missing)."""
    present = tuple(key for key in TASK_KEYS if results.get(key) is not None)
    missing = tuple(key for key in TASK_KEYS if key not in present)
    if not present:
        return OverallScore(None, present, missing)
    scores = [task_score(key, float(results[key])) for key in present]  # type: ignore[arg-type]
    return OverallScore(sum(scores) / len(scores), present, missing)


@dataclass
class ModelResults:
    """One model's per-task values (papers' units), with where each came from."""

    name: str
    values: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    printed_overall: Optional[float] = None  # the paper's printed Overall, for paper rows

    @property
    def score(self) -> OverallScore:
        return overall(self.values)


# --------------------------------------------------------------------------------------
# YAML / CSV tables
# --------------------------------------------------------------------------------------


def _number(value: object, where: str) -> Optional[float]:
    if value is None or (isinstance(value, str) and value.strip() in ("", "-", "null", "None")):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a number, got {short_repr(value)}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {short_repr(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {short_repr(value)} is not a finite number")
    return number


def check_value(key: str, value: float, where: str) -> None:
    """Raise ValueError for a value the task's metric cannot take (in the papers' units).

    Accuracies and F1 are percentages in [0, 100]; error rates are >= 0 (a WER can pass 100);
    QbE's MTWV is a fraction in [0, 1], and a percentage given for it gets a hint.
    """
    kind = TASK_BY_KEY[key].kind
    if kind == "mtwv":
        if 1.0 < value <= 100.0:
            raise ValueError(f"{where}: QbE MTWV is a fraction in [0, 1], got {value:g}; "
                             f"if that is a percentage, write {value / 100:g}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}: QbE MTWV is a fraction in [0, 1], got {value:g}")
    elif kind == "higher" and not 0.0 <= value <= 100.0:
        raise ValueError(f"{where}: {TASK_BY_KEY[key].title} is a percentage in [0, 100], got {value:g}")
    elif kind == "error" and value < 0.0:
        raise ValueError(f"{where}: {TASK_BY_KEY[key].title} is an error rate in percent (>= 0), got {value:g}")


def _row(name: str, mapping: Mapping[str, object], origin: str) -> ModelResults:
    row = ModelResults(str(name))
    origin, shown_name = plain(origin), plain(name, 100)  # one line, bounded, in every message
    for column, raw in mapping.items():
        key = canonical_task(str(column))
        if key is None:
            if str(column).strip().upper() == "OVERALL":
                row.printed_overall = _number(raw, f"{origin}: {shown_name}.{plain(str(column), 100)}")
            continue
        value = _number(raw, f"{origin}: {shown_name}.{plain(str(column), 100)}")
        if value is not None:
            check_value(key, value, f"{origin}: {shown_name}.{plain(str(column), 100)}")
            row.values[key] = value
            row.sources[key] = origin
    return row


def read_table(path: PathLike) -> list[ModelResults]:
    """Per-task results from a YAML (``.yaml``/``.yml``) or CSV (``.csv``) file.

    Raises:
        ValueError: unknown task names, non-numeric values, or an unreadable layout.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    origin = path.name
    if path.suffix.lower() == ".csv":
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        rows = []
        for number, record in enumerate(csv.DictReader(io.StringIO("\n".join(lines)))):
            name = record.get("model") or record.get("name") or (path.stem if number == 0 else f"{path.stem}-{number}")
            rows.append(_row(name, record, origin))
        return rows
    try:
        data = safe_load_bounded(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{plain(origin)}: not valid YAML ({plain(str(err).splitlines()[0], 200)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{plain(origin)}: expected a mapping of tasks (or of models to tasks)")
    if data and all(isinstance(value, dict) for value in data.values()):
        return [_row(str(name), values, origin) for name, values in data.items()]
    flat = dict(data)
    name = flat.pop("model", None) or flat.pop("name", None) or path.stem
    return [_row(str(name), flat, origin)]


def load_paper_results() -> list[ModelResults]:
    """The papers' SUPERB rows (``paper_results.csv`` in this package), printed Overall included."""
    return read_table(PAPER_RESULTS)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

_HEADINGS = {"PR": "PR PER↓", "KS": "KS acc", "IC": "IC acc", "SID": "SID acc", "ER": "ER acc", "ASR": "ASR WER↓",
             "QbE": "QbE MTWV", "SF_F1": "SF F1", "SF_CER": "SF CER↓", "ASV": "ASV EER↓", "SD": "SD DER↓"}


def _cell(key: str, value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if key == "QbE" else f"{value:.2f}"


def format_table(ours: Sequence[ModelResults], paper: Sequence[ModelResults] = (), fmt: str = "markdown") -> str:
    """Our models beside the paper rows; ``fmt`` is ``markdown`` or ``csv``.

    The Overall column is recomputed for every row (the paper's printed value follows in
    brackets); a model missing tasks gets a clearly labelled partial mean.
    """
    header = ["model", "source"] + [_HEADINGS[key] for key in TASK_KEYS] + ["Overall"]
    rows = []
    for group, label in ((paper, "paper"), (ours, "ours")):
        for row in group:
            score = row.score
            overall_text = score.label()
            if row.printed_overall is not None:
                overall_text += f" [{row.printed_overall:.1f}]"
            rows.append([row.name, label] + [_cell(key, row.values.get(key)) for key in TASK_KEYS] + [overall_text])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([name.replace("↓", "") for name in header])
        writer.writerows(rows)
        return out.getvalue()
    if fmt != "markdown":
        raise ValueError(f"unknown format {fmt!r}; use markdown or csv")
    widths = [max(len(str(line[i])) for line in [header] + rows) for i in range(len(header))]

    def render(line: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(line, widths)) + " |"

    lines = [render(header), "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    lines += [render(line) for line in rows]
    return "\n".join(lines) + "\n"


def describe(results: Sequence[ModelResults]) -> str:
    """Per-model details: where each value came from, missing tasks, notes."""
    lines = []
    for row in results:
        score = row.score
        lines.append(f"{row.name}: Overall {score.label()}")
        if not score.complete:
            lines.append(f"  missing: {', '.join(score.missing)} (Overall needs all {len(TASK_KEYS)} tasks; "
                         "the partial mean is not comparable with the papers')")
        for key in TASK_KEYS:
            if key in row.values:
                lines.append(f"  {key:<6} {_cell(key, row.values[key]):>8}  from {row.sources.get(key, '?')}")
        lines += [f"  note: {note}" for note in row.notes]
    return "\n".join(lines) + ("\n" if lines else "")
