"""Every fenced command and Python snippet of README.md and docs/*.md runs as written.

Shell blocks run with ``bash -e -o pipefail``, Python blocks in a fresh interpreter, both with
this venv's ``bin`` first on ``PATH`` (``recycle-distill``, ``python``), ``HF_HUB_OFFLINE=1``, and
in one working folder per page, block after block, so a block may use what an earlier block of
its page wrote. The only substitutions are the placeholder paths and stand-in files of
``helpers.doc_blocks`` (listed in docs/development.md, "Documentation tests"); a block marked
``<!-- doc-test: skip REASON -->`` is left out with its reason, printed by
:func:`test_the_blocks_left_out_are_listed`, and ``<!-- doc-test: slow -->`` runs it in the slow
suite only.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from helpers import doc_blocks
from helpers.doc_blocks import ROOT, Block

BLOCKS = doc_blocks.all_blocks()
RUNNABLE = list(doc_blocks.iter_run_blocks(BLOCKS))
TIMEOUT = 600


def _param(block: Block):
    marks = [pytest.mark.slow] if block.marker == "slow" else []
    return pytest.param(block, id=block.name, marks=marks)


@pytest.fixture(scope="session")
def page_folders(tmp_path_factory):
    """One working folder per page, and one Hugging Face cache for all of them."""
    root = tmp_path_factory.mktemp("doc-blocks")
    folders: dict[pathlib.Path, pathlib.Path] = {}

    def folder(page: pathlib.Path) -> pathlib.Path:
        if page not in folders:
            folders[page] = root / page.stem
            folders[page].mkdir()
        return folders[page]

    folder.hub = root / "hf-cache"  # type: ignore[attr-defined]
    folder.stand_ins = root / "stand-ins"  # type: ignore[attr-defined]  # each made once, copied per page
    return folder


def _environment(hub: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub), OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
               PYTHONDONTWRITEBYTECODE="1")
    return env


def run_block(block: Block, folder: pathlib.Path, hub: pathlib.Path,
              stand_ins: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    text = doc_blocks.substitute(block.text)
    doc_blocks.prepare(folder, text, stand_ins)
    doc_blocks.hub_cache(hub, text, stand_ins)
    if doc_blocks.RUN[block.language] == "bash":
        command = ["bash", "-e", "-o", "pipefail", "-c", text]
    else:
        command = [sys.executable, "-c", text]
    return subprocess.run(command, cwd=folder, env=_environment(hub), capture_output=True, text=True,
                          timeout=TIMEOUT)


@pytest.mark.parametrize("block", [_param(b) for b in RUNNABLE])
def test_block_runs_as_written(block, page_folders):
    if block.marker == "skip":
        pytest.skip(f"{block.name}: {block.reason}")
    done = run_block(block, page_folders(block.page), page_folders.hub, page_folders.stand_ins)
    assert done.returncode == 0, (f"{block.name} failed (exit {done.returncode}):\n{block.text}\n"
                                  f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}")


@pytest.mark.parametrize("block", [pytest.param(b, id=b.name) for b in BLOCKS if b.language == "yaml"])
def test_yaml_blocks_parse(block):
    assert yaml.safe_load(block.text) is not None, block.name


def test_every_block_names_a_known_language():
    unknown = [f"{b.name}: {b.language or '(none)'}" for b in BLOCKS
               if b.language not in doc_blocks.RUN and b.language not in doc_blocks.DATA]
    assert not unknown, "fences must name a language (bash, python or a data one): " + "; ".join(unknown)


def test_the_blocks_left_out_are_listed(capsys):
    """Prints the blocks left out and why; each is a run language with a reason."""
    left_out = [b for b in BLOCKS if b.marker == "skip"]
    with capsys.disabled():
        print(f"\ndoc blocks left out ({len(left_out)} of {len(RUNNABLE)} runnable):")
        for block in left_out:
            print(f"  {block.name}: {block.reason}")
    assert all(b.language in doc_blocks.RUN and b.reason for b in left_out)
    # Most blocks run: a page rewritten into skips is a regression of this test, not of the docs.
    assert len(left_out) * 2 < len(RUNNABLE)


def test_the_parser_finds_the_blocks():
    """Guards the parser: the README's first Python block and the blocks of every page."""
    readme = [b for b in BLOCKS if b.page.name == "README.md"]
    assert any(b.language == "python" and "import recycle_distill as rd" in b.text for b in readme)
    assert {b.page.name for b in RUNNABLE} >= {"README.md", "usage.md", "inference.md", "superb.md", "training.md"}
    assert len(RUNNABLE) >= 30


@pytest.mark.parametrize("text, error", [
    ("<!-- doc-test: skp typo -->\n```bash\ntrue\n```\n", "unknown doc-test marker 'skp'"),
    ("<!-- doc-test: skip -->\n```bash\ntrue\n```\n", "'doc-test: skip' needs a reason"),
    ("<!-- doc-test: slow -->\nprose\n```bash\ntrue\n```\n", "must be the line right above a fence"),
    ("```bash\ntrue\n", "fence never closed"),
])
def test_bad_markers_are_refused(tmp_path, text, error):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(ValueError, match=re.escape(error)):
        doc_blocks.read_blocks(page)


def test_markers_are_read(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- doc-test: skip needs a GPU -->\n```bash\nnvidia-smi\n```\n\n"
                    "<!-- doc-test: slow -->\n```python\nprint(1)\n```\n\n```yaml\na: 1\n```\n")
    blocks = doc_blocks.read_blocks(page)
    assert [(b.line, b.language, b.marker, b.reason, b.text) for b in blocks] == [
        (2, "bash", "skip", "needs a GPU", "nvidia-smi\n"),
        (7, "python", "slow", "", "print(1)\n"),
        (11, "yaml", None, "", "a: 1\n")]


def test_a_failing_block_fails(tmp_path):
    """The runner reports a failing line: set -e stops a shell block, a Python error exits 1."""
    shell = Block(tmp_path / "p.md", 1, "bash", "false\necho after\n")
    done = run_block(shell, tmp_path, tmp_path / "hub")
    assert done.returncode == 1 and "after" not in done.stdout
    python = Block(tmp_path / "p.md", 1, "python", "undefined_name\n")
    assert "NameError" in run_block(python, tmp_path, tmp_path / "hub").stderr


def test_stand_ins_are_not_made_for_outputs(tmp_path):
    made = doc_blocks.prepare(tmp_path, "recycle-distill export x -o armhubert.onnx\ncat results.yaml\n")
    assert made == ["results.yaml"] and not (tmp_path / "armhubert.onnx").exists()
    assert yaml.safe_load((tmp_path / "results.yaml").read_text())["my-armhubert"]["PR"] == 7.72


def test_development_page_lists_the_substitutions():
    """docs/development.md states the same placeholders and stand-in names as helpers.doc_blocks."""
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    section = text.split("## Documentation tests", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))
    assert listed == set(doc_blocks.PATHS) | set(doc_blocks.STAND_INS)
