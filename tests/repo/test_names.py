"""No two classes of the package share a name, so a class name alone (in a traceback, a log line,
the docs, a ``pytest.raises``) says which one is meant.

Every module of ``recycle_distill`` is read with ``ast`` (nothing is imported), classes nested in
functions or other classes included, together with ``upstreams/`` (installed as
``recycle_distill.upstreams``).

The one exemption is S3PRL's contract: its runner imports ``<folder>.expert`` and takes the class
named ``UpstreamExpert`` (each ``upstreams/<family>/expert.py``) or ``DownstreamExpert`` (each
``recycle_distill/downstreams/<name>/expert.py``), so those names must repeat, once per folder.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = (REPO / "recycle_distill", REPO / "upstreams")
S3PRL_CONTRACT = {"UpstreamExpert", "DownstreamExpert"}  # names S3PRL looks up in every expert.py


def class_names(path: Path) -> list[str]:
    """Every class defined in a file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]


def defined_where(roots=ROOTS, base: Path = REPO) -> dict[str, list[str]]:
    """Class name -> the files (relative to ``base``) defining it, once per definition."""
    where: dict[str, list[str]] = defaultdict(list)
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            exempt = path.name == "expert.py"
            for name in class_names(path):
                if not (exempt and name in S3PRL_CONTRACT):
                    where[name].append(path.relative_to(base).as_posix())
    return where


def test_no_class_name_is_defined_twice():
    repeated = {name: files for name, files in defined_where().items() if len(files) > 1}
    assert not repeated, f"class names defined more than once: {repeated}"


def test_the_walk_sees_the_package_and_finds_repeats(tmp_path):
    where = defined_where()
    assert "StudentConfig" in where and "ConfigError" in where and "StudentUpstream" in where
    assert len(where) > 100  # the whole package, not an empty folder
    (tmp_path / "a.py").write_text("class Twice:\n    pass\n")
    (tmp_path / "b.py").write_text("def f():\n    class Twice:\n        pass\n")
    (tmp_path / "expert.py").write_text("class DownstreamExpert:\n    pass\n")
    (tmp_path / "other.py").write_text("class DownstreamExpert:\n    pass\n")
    found = defined_where([tmp_path], base=tmp_path)
    assert len(found["Twice"]) == 2
    assert len(found["DownstreamExpert"]) == 1  # exempt in expert.py only
