"""Each downstream is self-contained: of the package it imports only recycle_distill.util and
its own subpackage (docstring of recycle_distill/downstreams/__init__.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import recycle_distill.downstreams as downstreams

FOLDER = Path(downstreams.__file__).parent


def package_imports(path: Path) -> set[str]:
    """Every ``recycle_distill...`` module a file imports, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the package uses absolute imports)"
            names.add(node.module or "")
    return {name for name in names if name.split(".")[0] == "recycle_distill"}


def allowed(name: str, own: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in ("recycle_distill.util", own))


@pytest.mark.parametrize("name", downstreams.available())
def test_a_downstream_imports_only_util_and_itself(name):
    own = f"recycle_distill.downstreams.{name}"
    files = sorted((FOLDER / name).rglob("*.py"))
    assert files
    wrong = {f"{path.relative_to(FOLDER)}: {module}" for path in files
             for module in package_imports(path) if not allowed(module, own)}
    assert not wrong, sorted(wrong)


def test_the_checker_above_catches_an_outside_import(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from recycle_distill.students.config import StudentConfig\n")
    assert package_imports(path) == {"recycle_distill.students.config"}
    assert not allowed("recycle_distill.students.config", "recycle_distill.downstreams.cif_asr")
    assert allowed("recycle_distill.util.sample_rate", "recycle_distill.downstreams.cif_asr")
    assert not allowed("recycle_distill.downstreams.cif_asr_other", "recycle_distill.downstreams.cif_asr")


def test_the_downstreams_package_itself_imports_nothing_of_the_package():
    assert package_imports(FOLDER / "__init__.py") == set()
