"""The package's layers, read from the source: no import cycles, no import of a layer above.

Every module of the installed package is parsed with ``ast`` (never imported): everything
under ``recycle_distill/``, and the S3PRL folders ``upstreams/`` at the repo root (installed as
``recycle_distill.upstreams``, counted in the ``s3prl`` wing). An edge is any import of a
``recycle_distill`` module anywhere in a module (inside functions and ``TYPE_CHECKING`` blocks
too), an ``importlib.import_module`` call with a literal name (an f-string counts as every
module under its literal prefix), and a lazy-name table handed to
:func:`recycle_distill.util.lazy.lazy_attributes` (its relative module names).

:data:`ORDER` is the one statement of the layer order; docs/development.md ("Layers") shows
it and :func:`test_the_doc_shows_the_same_order` keeps the two equal.
"""

from __future__ import annotations

import ast
import pathlib
import re
from collections.abc import Iterator

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = "recycle_distill"

# Lowest first: a module may import its own layer and the layers to its left, never one to its
# right. A module belongs to the longest entry its name (after "recycle_distill.") starts with.
ORDER = [
    "util", "families", "students.config", "students.blocks", "inference.blocks", "students", "inference",
    "checkpoint", "hf_export", "downstreams", "s3prl", "recognizer", "training", "lab", "cli",
]
# The public facade (the root __init__ and __main__) sits above every layer; nothing imports it.
FACADE = (PACKAGE, f"{PACKAGE}.__main__")
# Installed as recycle_distill.upstreams (setup.py's package_dir): the S3PRL upstream folders.
WING_ALIASES = {"upstreams": "s3prl"}
# The folders whose __init__ docstring must say what the layer may import.
WING_FOLDERS = ["util", "students", "students/blocks", "checkpoint", "inference", "inference/blocks", "hf_export",
                "downstreams", "s3prl", "recognizer", "training", "lab", "cli"]


# ------------------------------------------------------------------ the modules and their edges
def package_files() -> dict[str, pathlib.Path]:
    """Module name -> source file, for every module of the installed package."""
    roots = {PACKAGE: REPO / PACKAGE, f"{PACKAGE}.upstreams": REPO / "upstreams"}
    modules = {}
    for prefix, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


MODULES = package_files()


def resolve(name: str) -> str | None:
    """The module ``name`` denotes: itself, or its nearest enclosing module (``a.b.attr`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(module: str, is_package: bool, relative: str, level: int) -> str:
    """``from <level dots><relative> import ...`` inside ``module``, as an absolute name."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([relative] if relative else []))


def _string_imports(node: ast.Call) -> list[str]:
    """Modules an ``import_module(...)`` call names: a literal, or every module under an
    f-string's literal prefix (only prefixes inside the package count)."""
    if not node.args:
        return []
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        if prefix.startswith(f"{PACKAGE}."):
            return [name for name in MODULES if name.startswith(prefix)] or [prefix.rstrip(".")]
    return []


def _lazy_tables(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level ``NAME = {"attr": ".module", ...}`` dicts whose values are all relative names."""
    tables = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and node.value.values:
            values = [v.value for v in node.value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            if len(values) == len(node.value.values) and all(v.startswith(".") for v in values):
                tables[node.targets[0].id] = values
    return tables


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def raw_imports(module: str) -> Iterator[str]:
    """Every ``recycle_distill`` name ``module`` imports, as written (absolute)."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    tables = _lazy_tables(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.module or "", node.level) if node.level else node.module or ""
            # `from pkg import name`: the submodule pkg.name where it is one, else pkg itself.
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _call_name(node) == "import_module":
            yield from _string_imports(node)
        elif isinstance(node, ast.Call) and _call_name(node) == "lazy_attributes" and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Name):
            package = module if is_package else module.rpartition(".")[0]
            for relative in tables.get(node.args[1].id, []):
                level = len(relative) - len(relative.lstrip("."))
                yield _absolute(package, True, relative.lstrip("."), level)


def imports_of(module: str) -> set[str]:
    """The package modules ``module`` imports (itself excluded)."""
    found = {resolve(name) for name in raw_imports(module) if name.split(".")[0] == PACKAGE}
    return found - {None, module}


GRAPH = {module: imports_of(module) for module in MODULES}


# ------------------------------------------------------------------ layers
def layer(module: str) -> str:
    """The ORDER entry ``module`` belongs to (the longest matching prefix), or "facade"."""
    if module in FACADE:
        return "facade"
    rest = module[len(PACKAGE) + 1:]
    head = rest.split(".")[0]
    rest = WING_ALIASES[head] + rest[len(head):] if head in WING_ALIASES else rest
    matches = [entry for entry in ORDER if rest == entry or rest.startswith(entry + ".")]
    assert matches, f"{module} belongs to no layer of ORDER: add its wing to ORDER (and to docs/development.md)"
    return max(matches, key=len)


def rank(module: str) -> int:
    return len(ORDER) if layer(module) == "facade" else ORDER.index(layer(module))


def test_the_graph_sees_the_kinds_of_import_it_promises_to():
    """The parser is what the other tests trust: each kind of edge is found where it is known to be."""
    assert "recycle_distill.inference.blocks.conv_runner" in GRAPH["recycle_distill.training.teacher.teacher"]
    assert "recycle_distill.inference.optimize" in GRAPH["recycle_distill.inference"]  # lazy table
    assert "recycle_distill.upstreams.armhubert.hubconf" in GRAPH["recycle_distill.s3prl.superb.launcher"]  # f-string
    assert "recycle_distill.families" in GRAPH["recycle_distill.upstreams"]
    assert layer("recycle_distill.upstreams.armhubert.expert") == "s3prl"
    assert layer("recycle_distill.students.blocks.encoder") == "students.blocks"
    assert layer("recycle_distill.students.build") == "students"
    assert layer("recycle_distill.inference.blocks") == "inference.blocks"


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        layer(module)


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(
        f"{module} ({layer(module)}) -> {target} ({layer(target)})"
        for module, targets in GRAPH.items() for target in targets
        if module not in FACADE and rank(target) > rank(module)
    )
    assert not upward, "imports of a higher layer (see ORDER):\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


# ------------------------------------------------------------------ what the docs and docstrings say
def _doc_order() -> list[str]:
    text = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    section = re.search(r"^## Layers\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert section, "docs/development.md has no '## Layers' section"
    lines = [line.strip().strip("`") for line in section.group(1).splitlines() if line.strip().startswith("`util <")]
    assert len(lines) == 1, "the Layers section must show the order once, as one `util < ... < cli` line"
    return [entry.strip() for entry in lines[0].split("<")]


def test_the_doc_shows_the_same_order():
    assert _doc_order() == ORDER


def _may_import_clause(docstring: str) -> str:
    """The text after the first "may import" up to the end of its sentence (or a ";"), joined
    across lines, without parenthetical remarks."""
    flat = " ".join(docstring.split())
    found = re.search(r"may import (.*?)(?:[.;](?:\s|$)|$)", flat)
    clause = found.group(1) if found else ""
    while re.search(r"\([^()]*\)", clause):
        clause = re.sub(r"\s*\([^()]*\)", "", clause)
    return clause


def _layers_named(clause: str) -> set[str]:
    """ORDER entries named in ``clause`` (``students.config`` is not also ``students``;
    ``recycle_distill.util`` is ``util``)."""
    pattern = "|".join(re.escape(entry) for entry in sorted(ORDER, key=len, reverse=True))
    text = clause.replace("``", "").replace(f"{PACKAGE}.", "")
    return set(re.findall(rf"(?<![\w.])({pattern})(?![\w])", text))


def _imported_layers(own: str) -> set[str]:
    """The other layers that modules of layer ``own`` import."""
    return {layer(target) for module, targets in GRAPH.items() if layer(module) == own
            for target in targets} - {own}


@pytest.mark.parametrize("folder", WING_FOLDERS)
def test_every_wing_init_says_what_it_may_import(folder):
    """Each wing's ``__init__`` docstring says what its layer "may import": only layers below it
    (the docstring promises nothing the order forbids), and at least every layer its modules do
    import (a wing may keep to fewer than the order allows, e.g. downstreams to util alone, and
    the test then holds it to that)."""
    path = REPO / PACKAGE / folder / "__init__.py"
    assert path.exists(), f"{folder}/ has no __init__.py (and so no docstring)"
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring, f"{path.relative_to(REPO)} has no docstring"
    clause = _may_import_clause(docstring)
    assert clause, f"{path.relative_to(REPO)}: its docstring does not say what the wing 'may import'"
    own = layer(f"{PACKAGE}.{folder.replace('/', '.')}")
    named = _layers_named(clause)
    assert named <= set(ORDER[: ORDER.index(own)]), f"{path.relative_to(REPO)} names a layer above {own}: {clause}"
    missing = _imported_layers(own) - named
    assert not missing, f"{path.relative_to(REPO)}: layer {own} imports {sorted(missing)}, which its docstring omits"


def test_docstring_parsing():
    assert _layers_named("util, families, students.config and ``students.blocks``") == {
        "util", "families", "students.config", "students.blocks"}
    assert _layers_named(":mod:`recycle_distill.util` and its own subpackage") == {"util"}
    assert _may_import_clause("Lives here.\nIt may import util and\nfamilies; nothing else.") == "util and families"
    assert _may_import_clause("It may import util (not cli) only.") == "util only"
