"""The SUPERB Overall score, from per-task results or from S3PRL's experiment logs.

Overall (as in the Recycle-and-Distill and STaR papers) is the mean of 11 numbers: PR PER,
KS acc, IC acc, SID acc, ER acc, ASR WER, QbE MTWV, SF F1, SF CER, ASV EER and SD DER, with
every error rate turned into ``100 - x`` and QbE's MTWV into ``100 * MTWV``. All values are in
the papers' units: percentages, except MTWV (0-1).

Results come from

- a YAML file: ``{model: {task: value}}`` or a flat ``{task: value}`` (with an optional
  ``model:`` key);
- a CSV file: one row per model, a ``model`` column and one column per task (blank: missing);
- S3PRL experiment directories (or folders holding them, or single ``*.log`` files): the task
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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import yaml

from .launcher import HEADER

logger = logging.getLogger(__name__)

__all__ = [
    "TASKS",
    "TASK_KEYS",
    "ModelResults",
    "OverallScore",
    "format_table",
    "load_paper_results",
    "overall",
    "read_results",
    "read_s3prl_results",
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
_BY_KEY = {task.key: task for task in TASKS}
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
    kind = _BY_KEY[key].kind
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
        raise ValueError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    return number


def _row(name: str, mapping: Mapping[str, object], origin: str) -> ModelResults:
    row = ModelResults(str(name))
    for column, raw in mapping.items():
        key = canonical_task(str(column))
        if key is None:
            if str(column).strip().upper() == "OVERALL":
                row.printed_overall = _number(raw, f"{origin}: {name}.{column}")
            continue
        value = _number(raw, f"{origin}: {name}.{column}")
        if value is not None:
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
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{origin}: expected a mapping of tasks (or of models to tasks)")
    if data and all(isinstance(value, dict) for value in data.values()):
        return [_row(str(name), values, origin) for name, values in data.items()]
    flat = dict(data)
    name = flat.pop("model", None) or flat.pop("name", None) or path.stem
    return [_row(str(name), flat, origin)]


def load_paper_results() -> list[ModelResults]:
    """The papers' SUPERB rows (``paper_results.csv`` in this package), printed Overall included."""
    return read_table(PAPER_RESULTS)


# --------------------------------------------------------------------------------------
# S3PRL logs
# --------------------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_HEADER_RE = re.compile(rf"^{re.escape(HEADER)} run: mode=(?P<mode>\S+) split=(?P<split>\S+)\s*$")
_STEP_RE = re.compile(rf"^(?P<best>New best on )?(?P<split>[\w.-]+) at step (?P<step>\d+): (?P<value>{_NUMBER})\s*$")
_METRIC_RE = re.compile(rf"^(?P<split>[\w.-]+) (?P<metric>[A-Za-z][\w]*): (?P<value>{_NUMBER})\s*$")
_SV_RE = re.compile(rf"^sv-voxceleb1/(?P<split>[\w.]+)-(?P<metric>EER|loss): (?P<value>{_NUMBER})\s*$")
_SD_RE = re.compile(rf"^mode (?P<split>\S+) acc (?P<acc>{_NUMBER}) der (?P<der>{_NUMBER})\s*$")


@dataclass(frozen=True)
class Observation:
    """One metric line of an S3PRL log."""

    split: str
    metric: str
    value: float
    file: Path
    line: int
    mode: Optional[str] = None  # "evaluate"/"train" for superb.log segments, else None
    step: Optional[int] = None  # log.log lines carry the step
    best: bool = False  # a log.log "New best on <split>" line


def parse_log(path: PathLike) -> list[Observation]:
    """Every metric line in one S3PRL log (``log.log``, ``superb.log`` or captured stdout)."""
    path = Path(path)
    found: list[Observation] = []
    mode: Optional[str] = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, 1):
            # tqdm bars share lines with prints in captured stdout; keep what follows a \r.
            line = raw.rstrip("\n").split("\r")[-1].strip()
            header = _HEADER_RE.match(line)
            if header:
                mode = header.group("mode")
                continue
            step = _STEP_RE.match(line)
            if step:
                # S3PRL's -m evaluate logs its result "at step 0" (no training step).
                at = int(step.group("step"))
                found.append(Observation(step.group("split"), "acc", float(step.group("value")), path, number,
                                         "evaluate" if at == 0 else mode, at, bool(step.group("best"))))
                continue
            sv = _SV_RE.match(line)
            if sv:
                found.append(Observation(sv.group("split"), sv.group("metric"), float(sv.group("value")), path, number, mode))
                continue
            sd = _SD_RE.match(line)
            if sd:
                for metric in ("acc", "der"):
                    found.append(Observation(sd.group("split"), metric, float(sd.group(metric)), path, number, mode))
                continue
            metric = _METRIC_RE.match(line)
            if metric:
                found.append(Observation(metric.group("split"), metric.group("metric"), float(metric.group("value")),
                                         path, number, mode))
    return found


@dataclass
class Experiment:
    """One S3PRL experiment directory: what ran and what it logged."""

    path: Path
    downstream: Optional[str]
    upstream: Optional[str]
    upstream_ckpt: Optional[str]
    config: Optional[str]
    observations: list[Observation]
    mtime: float

    @property
    def tasks(self) -> list[Task]:
        """The SUPERB tasks this experiment measures."""
        if self.downstream == "ctc":
            config = (self.config or "").lower()
            metrics = {obs.metric for obs in self.observations}
            if "snips" in config or "slot_type_f1" in metrics:
                return [_BY_KEY["SF_F1"], _BY_KEY["SF_CER"]]
            if "libriphone" in config or "per" in metrics:
                return [_BY_KEY["PR"]]
            return []
        return [task for task in TASKS if task.downstream == self.downstream]


def _read_args(folder: Path) -> dict:
    files = sorted(folder.glob("args_*.yaml"))
    if not files:
        return {}
    text = files[-1].read_text(encoding="utf-8", errors="replace")
    try:
        data = yaml.safe_load(text)
        if isinstance(data, dict):
            return data
    except yaml.YAMLError:
        pass
    # yaml.dump of an unusual value: fall back to the plain "key: value" lines we need.
    data = {}
    for key in ("downstream", "upstream", "upstream_ckpt", "config"):
        match = re.search(rf"^{key}: (.+)$", text, re.MULTILINE)
        if match:
            data[key] = match.group(1).strip()
    return data


def _log_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.glob("*.log") if p.is_file()), key=lambda p: (p.stat().st_mtime, p.name))


def read_experiment(folder: PathLike) -> Experiment:
    """The args and every metric line of one experiment directory."""
    folder = Path(folder)
    args = _read_args(folder)
    observations: list[Observation] = []
    files = _log_files(folder)
    for log in files:
        observations += parse_log(log)
    stamps = [p.stat().st_mtime for p in files + sorted(folder.glob("args_*.yaml"))]
    return Experiment(folder, args.get("downstream"), args.get("upstream"), args.get("upstream_ckpt"),
                      args.get("config"), observations, max(stamps) if stamps else 0.0)


def find_experiments(path: PathLike) -> list[Path]:
    """Experiment directories at or under ``path`` (folders with ``args_*.yaml`` or ``*.log``)."""
    path = Path(path)
    if path.is_file():
        return [path.parent]
    found = []
    for folder, _, files in os.walk(path):
        if any(name.endswith(".log") or (name.startswith("args_") and name.endswith(".yaml")) for name in files):
            found.append(Path(folder))
    return sorted(found)


def pick_test_value(experiment: Experiment, task: Task) -> tuple[Optional[float], str]:
    """(value in the papers' unit, where it came from) of ``task``'s test metric, or (None, why)."""
    split, metric = task.test_split, task.metric
    wanted = [obs for obs in experiment.observations if obs.split == split and obs.metric == metric]
    evaluated = [obs for obs in wanted if obs.mode == "evaluate"]

    def where(obs: Observation) -> str:
        return f"{obs.file.name}:{obs.line} in {experiment.path}"

    if evaluated:
        obs = evaluated[-1]
        return obs.value * task.log_scale, f"-m evaluate -t {split} ({where(obs)})"
    best_steps = [obs.step for obs in experiment.observations if obs.best and obs.split == "dev" and obs.step is not None]
    if best_steps:
        at_best = [obs for obs in wanted if obs.step == best_steps[-1]]
        if at_best:
            obs = at_best[-1]
            return obs.value * task.log_scale, f"{split} at the dev-best step {obs.step} ({where(obs)})"
    if wanted:
        obs = wanted[-1]
        when = f" at step {obs.step}" if obs.step is not None else ""
        return obs.value * task.log_scale, f"last {split} evaluation during training{when} ({where(obs)})"
    dev = [obs for obs in experiment.observations if obs.split.startswith("dev") and obs.metric == metric]
    if task.key == "QbE":
        return None, "QbE's MTWV comes from the QUESST 2014 scoring tool, not from S3PRL's logs: add it in a YAML/CSV"
    if dev:
        return None, f"only {dev[-1].split} results; run -m evaluate -t {split} -e <dev-best ckpt>"
    return None, f"no {split} {metric} in the logs"


def _model_name(experiment: Experiment) -> str:
    upstream = experiment.upstream or "unknown-upstream"
    if experiment.upstream_ckpt and experiment.upstream_ckpt != "None":
        return f"{upstream}:{Path(str(experiment.upstream_ckpt)).stem}"
    return upstream


def read_s3prl_results(paths: Iterable[PathLike], name: Optional[str] = None) -> list[ModelResults]:
    """Per-task results of the S3PRL experiments at or under ``paths``, grouped by model.

    The model is ``name`` when given, else ``<-u>:<checkpoint stem>`` from ``args_*.yaml``.
    Several runs of one task: ER (5-fold cross-validation in SUPERB) is averaged, any other task
    takes the newest run, with a note.
    """
    per_model: dict[str, dict[str, list[tuple[float, str, float]]]] = {}
    notes: dict[str, list[str]] = {}
    for path in paths:
        for folder in find_experiments(path):
            experiment = read_experiment(folder)
            model = name or _model_name(experiment)
            notes.setdefault(model, [])
            tasks = experiment.tasks
            if not tasks:
                if experiment.observations or experiment.downstream:
                    notes[model].append(f"{folder}: -d {experiment.downstream or '?'} is not a SUPERB task we can read")
                continue
            for task in tasks:
                value, source = pick_test_value(experiment, task)
                if value is None:
                    notes[model].append(f"{task.key}: {source} ({folder})")
                    continue
                per_model.setdefault(model, {}).setdefault(task.key, []).append((value, source, experiment.mtime))
    results = []
    for model in sorted(set(per_model) | {m for m, n in notes.items() if n}):
        row = ModelResults(model, notes=list(notes.get(model, [])))
        for key, runs in per_model.get(model, {}).items():
            if key == "ER" and len(runs) > 1:
                row.values[key] = sum(value for value, _, _ in runs) / len(runs)
                row.sources[key] = f"mean of {len(runs)} runs (ER folds)"
                if len(runs) != 5:
                    row.notes.append(f"ER: {len(runs)} folds found; SUPERB averages 5")
                continue
            value, source, _ = max(runs, key=lambda run: run[2])
            row.values[key], row.sources[key] = value, source
            if len(runs) > 1:
                row.notes.append(f"{key}: {len(runs)} runs found; used the newest")
        results.append(row)
    return results


def read_results(paths: Sequence[PathLike], name: Optional[str] = None) -> list[ModelResults]:
    """Results from any mix of YAML/CSV tables and S3PRL experiment paths (logs merged per model)."""
    tables: list[ModelResults] = []
    logs: list[PathLike] = []
    for path in paths:
        suffix = Path(path).suffix.lower()
        if Path(path).is_file() and suffix in (".yaml", ".yml", ".csv"):
            rows = read_table(path)
            if name is not None:
                for row in rows:
                    row.name = name
            tables += rows
        elif Path(path).exists():
            logs.append(path)
        else:
            raise FileNotFoundError(f"no such results file or experiment folder: {path}")
    merged: dict[str, ModelResults] = {}
    for row in tables + (read_s3prl_results(logs, name) if logs else []):
        if row.name in merged:
            target = merged[row.name]
            for key, value in row.values.items():
                if key in target.values:
                    target.notes.append(f"{key}: given twice; used {row.sources[key]}")
                target.values[key], target.sources[key] = value, row.sources[key]
            target.notes += row.notes
        else:
            merged[row.name] = row
    return list(merged.values())


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
