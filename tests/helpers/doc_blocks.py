"""The fenced blocks of README.md and docs/*.md, their doc-test markers, and the stand-in files
they run on (used by ``tests/repo/test_doc_blocks.py``; the rules are in docs/development.md,
"Documentation tests").

A block is run as written, with two substitutions only:

- :data:`PATHS`: placeholder paths replaced in the block's text;
- :data:`STAND_INS`: files the pages name (``ARMHuBERT-960h.ckpt``, ``armhubert-960.yaml``, ...)
  written, with random weights of the real shapes or tiny ones, into the page's working folder
  before the first block that names them (a name the block writes with ``-o`` is left to it).
  Released names (``armhubert_960h``) resolve through a Hugging Face cache holding the stand-in
  (``HF_HUB_OFFLINE=1``): nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil
from typing import Callable, Iterator, Optional

import torch
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Fence languages: the ones run, and the ones that are data (yaml is parsed, the rest is text).
RUN = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
DATA = {"yaml", "bibtex", "text", "json", "toml", "ini"}

FENCE = re.compile(r"^(\s*)(```|~~~)\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
MARKER_KINDS = ("skip", "slow")

# Placeholder paths -> what the test puts there. One table; docs/development.md repeats it.
PATHS = {"/path/to/recycle-distill": str(ROOT)}


@dataclasses.dataclass(frozen=True)
class Block:
    page: pathlib.Path
    line: int          # 1-based line of the opening fence
    language: str
    text: str
    marker: Optional[str] = None   # "skip" or "slow"
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def read_blocks(page: pathlib.Path) -> list[Block]:
    """Every fenced block of ``page`` with the ``<!-- doc-test: ... -->`` line right above it.

    A marker that is not right above a fence, or whose kind is unknown, is a ValueError naming
    the page and line: a typo must not silently run or drop a block."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    pending: Optional[tuple[int, str, str]] = None
    while index < len(lines):
        line = lines[index]
        marker = MARKER.match(line.strip())
        if marker:
            kind, _, reason = marker.group(1).partition(" ")
            if kind not in MARKER_KINDS:
                raise ValueError(f"{page.name}:{index + 1}: unknown doc-test marker {kind!r}; "
                                 f"use one of {', '.join(MARKER_KINDS)}")
            if kind == "skip" and not reason.strip():
                raise ValueError(f"{page.name}:{index + 1}: 'doc-test: skip' needs a reason")
            pending = (index + 1, kind, reason.strip())
            index += 1
            continue
        fence = FENCE.match(line)
        if fence:
            end = index + 1
            while end < len(lines) and not lines[end].strip().startswith(fence.group(2)):
                end += 1
            if end == len(lines):
                raise ValueError(f"{page.name}:{index + 1}: fence never closed")
            indent = len(fence.group(1))
            text = "\n".join(body[indent:] for body in lines[index + 1:end]) + "\n"
            kind, reason = (pending[1], pending[2]) if pending else (None, "")
            blocks.append(Block(page, index + 1, fence.group(3).lower(), text, kind, reason))
            pending = None
            index = end + 1
            continue
        if pending is not None and line.strip():
            raise ValueError(f"{page.name}:{pending[0]}: a doc-test marker must be the line right above a fence")
        index += 1
    if pending is not None:
        raise ValueError(f"{page.name}:{pending[0]}: a doc-test marker must be the line right above a fence")
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in read_blocks(page)]


def substitute(text: str) -> str:
    for placeholder, path in PATHS.items():
        text = text.replace(placeholder, path)
    return text


def outputs(text: str) -> set[str]:
    """The names a block writes with ``-o`` / ``--output`` (never replaced by a stand-in)."""
    return {name.rstrip("/") for name in re.findall(r"(?<![\w-])(?:-o|--output)\s+([^\s\"']+)", text)}


# ------------------------------------------------------------------------------- stand-ins
def _student_state(preset_or_config, family: str, seed: int = 0) -> tuple[dict, dict]:
    """(state_dict, distiller config) of a student with random weights from ``seed``."""
    from recycle_distill.students.build import build_student, resolve_config

    torch.manual_seed(seed)
    config, _ = resolve_config(preset_or_config, family)
    model = build_student(config, family)
    return model.state_dict(), config.to_dict()


def _lightning(path: pathlib.Path, state: dict) -> None:
    """The released Lightning layout: ``student_model.*`` beside a teacher key."""
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.7.7",
                "state_dict": {**{f"student_model.{k}": v for k, v in state.items()},
                               "teacher_model.model.encoder.layer_norm.weight": torch.ones(8)}}, path)


def _released_armhubert(path: pathlib.Path) -> None:
    _lightning(path, _student_state("armhubert", "armhubert")[0])


def _released_maskhubert(path: pathlib.Path) -> None:
    _lightning(path, _student_state("maskhubert", "maskhubert")[0])


def _reference_yaml(path: pathlib.Path) -> None:
    shutil.copyfile(ROOT / "tests" / "data" / "conf" / "armhubert-960.yaml", path)


def _tiny_compact(path: pathlib.Path) -> None:
    from recycle_distill.checkpoint import save_compact
    from helpers.tiny_students import tiny_config, tiny_student

    save_compact(str(path), tiny_student("armhubert").state_dict(), "armhubert", tiny_config("armhubert"))


def _tiny_onnx(path: pathlib.Path) -> None:
    from recycle_distill.inference.onnx_export import export_onnx
    from helpers.tiny_students import tiny_student

    export_onnx(tiny_student("armhubert"), path, family="armhubert")


def _score_logs(path: pathlib.Path) -> None:
    """One S3PRL SID experiment's arguments and log, as S3PRL 0.4.18 writes them."""
    experiment = path / "sid_arm"
    experiment.mkdir(parents=True)
    (experiment / "args_2026-01-01-00-00-00.yaml").write_text(yaml.safe_dump(
        {"downstream": "voxceleb1", "upstream": "armhubert", "upstream_ckpt": "ARMHuBERT-960h.ckpt",
         "config": "x.yaml", "mode": "train"}))
    (experiment / "log.log").write_text("dev at step 4: 0.5\nNew best on dev at step 4: 0.5\ntest at step 4: 0.625\n")


def _score_table(path: pathlib.Path) -> None:
    """The ```yaml block of docs/superb.md (the table format that page shows)."""
    (table,) = [b for b in read_blocks(ROOT / "docs" / "superb.md") if b.language == "yaml"]
    path.write_text(table.text)


# Name in the docs -> (what stands in for it, how it is made). docs/development.md repeats it.
STAND_INS: dict[str, tuple[str, Callable[[pathlib.Path], None]]] = {
    "ARMHuBERT-960h.ckpt": ("random weights of the real shape, released Lightning layout", _released_armhubert),
    "armhubert-960.yaml": ("the reference YAML itself (tests/data/conf)", _reference_yaml),
    "MaskHuBERT-960h.ckpt": ("random weights of the real shape, released Lightning layout", _released_maskhubert),
    "run/student.safetensors": ("a tiny ARMHuBERT compact file", _tiny_compact),
    "armhubert.onnx": ("a tiny ARMHuBERT ONNX export", _tiny_onnx),
    "result/downstream": ("one S3PRL SID experiment's arguments and log", _score_logs),
    "results.yaml": ("the yaml block of docs/superb.md", _score_table),
}


def prepare(folder: pathlib.Path, text: str, cache: Optional[pathlib.Path] = None) -> list[str]:
    """Write into ``folder`` every stand-in that ``text`` names, does not write and that is not
    there yet (copied from ``cache``, where each is made once); returns their names."""
    made = []
    written = outputs(text)
    for name, (_, make) in STAND_INS.items():
        target = folder / name
        if name in text and name not in written and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            if cache is None:
                make(target)
            else:
                _copy(_made_once(cache, name), target)
            made.append(name)
    return made


def _made_once(cache: pathlib.Path, name: str) -> pathlib.Path:
    source = cache / name
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        STAND_INS[name][1](source)
    return source


def _copy(source: pathlib.Path, target: pathlib.Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def hub_cache(folder: pathlib.Path, text: str, cache: Optional[pathlib.Path] = None) -> None:
    """A Hugging Face cache under ``folder`` holding the stand-in of every release ``text`` names
    (the file the release row names, at its place in the cache), for ``HF_HUB_OFFLINE=1``."""
    from recycle_distill import families

    for name, release in families.RELEASES.items():
        if not re.search(rf"\b{re.escape(name)}\b", text) or release.filename not in STAND_INS:
            continue
        repo = folder / ("models--" + families.HF_REPO.replace("/", "--"))
        commit = "0" * 40
        target = repo / "snapshots" / commit / release.filename
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        if cache is None:
            STAND_INS[release.filename][1](target)
        else:
            _copy(_made_once(cache, release.filename), target)


def iter_run_blocks(blocks: list[Block]) -> Iterator[Block]:
    return (block for block in blocks if block.language in RUN)
