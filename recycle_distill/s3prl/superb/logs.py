"""SUPERB results from S3PRL's own experiment logs (``log.log``, ``superb.log``, captured stdout).

For a log-derived value the test split is preferred from a ``-m evaluate`` run, then the test
evaluation at the step where dev was best (``log.log``), then the last test evaluation during
training; each value says where it came from.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import yaml

from recycle_distill.util.safe_yaml import safe_load_bounded
from recycle_distill.s3prl.superb.launcher import HEADER
from recycle_distill.s3prl.superb.score import TASK_BY_KEY, TASKS, ModelResults, Task, read_table

logger = logging.getLogger(__name__)

__all__ = ["Observation", "parse_log", "read_experiment", "find_experiments", "read_s3prl_results", "read_results"]

PathLike = Union[str, os.PathLike]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
# launcher.run_line; logs of earlier versions name a split for training runs too (ignored).
_HEADER_RE = re.compile(rf"^{re.escape(HEADER)} run: mode=(?P<mode>\S+)(?: split=(?P<split>\S+))?\s*$")
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
                return [TASK_BY_KEY["SF_F1"], TASK_BY_KEY["SF_CER"]]
            if "libriphone" in config or "per" in metrics:
                return [TASK_BY_KEY["PR"]]
            return []
        return [task for task in TASKS if task.downstream == self.downstream]


def _read_args(folder: Path) -> dict:
    files = sorted(folder.glob("args_*.yaml"))
    if not files:
        return {}
    text = files[-1].read_text(encoding="utf-8", errors="replace")
    try:
        data = safe_load_bounded(text)
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


