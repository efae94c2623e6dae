"""The documentation stays true to the tree: the README's first screen, every relative link and
anchor, every dotted name that docs/api.md and the CHANGELOG's "new" column promise, the README's
length, and no project-history wording on the user-facing pages."""

from __future__ import annotations

import importlib
import pathlib
import re
from typing import Any, Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"
API = ROOT / "docs" / "api.md"
USER_PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINKED_PAGES = [*USER_PAGES, CHANGELOG, ROOT / "benchmarks" / "README.md"]

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOTTED = re.compile(r"recycle_distill(?:\.\w+)+")
# Wording that belongs to the project's history, not to a user's page.
HISTORY_WORDS = ("NOT met", " met)", "missed", "the issue")


def prose_lines(path: pathlib.Path) -> Iterator[str]:
    """The lines of a markdown file outside fenced code blocks."""
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def github_anchors(path: pathlib.Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path``: lower case, punctuation dropped, spaces
    as hyphens, ``-1``, ``-2``, ... on repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))  # a link keeps its text
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(path: pathlib.Path) -> Iterator[str]:
    for line in prose_lines(path):
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, ...
                yield target


def resolve(dotted: str) -> Any:
    """Import the longest importable module prefix of ``dotted`` and getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as error:
            if error.name is not None and not ".".join(parts[:cut]).startswith(error.name):
                raise  # the module exists but one of its own imports is missing
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def api_names() -> list[str]:
    """Every ``recycle_distill....`` name in backticks on docs/api.md."""
    return sorted({token for token in re.findall(r"`([^`]+)`", API.read_text(encoding="utf-8"))
                   if DOTTED.fullmatch(token)})


def changelog_new_names() -> list[str]:
    """Every ``recycle_distill....`` name in backticks in the "new" column of the CHANGELOG's
    ``| old | new |`` tables."""
    names: set[str] = set()
    in_table = False
    for line in prose_lines(CHANGELOG):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells == ["old", "new"]:
            in_table = True
        elif not cells:
            in_table = False
        elif in_table and len(cells) == 2 and not set(cells[1]) <= set("-: "):
            names.update(token for token in re.findall(r"`([^`]+)`", cells[1]) if DOTTED.fullmatch(token))
    return sorted(names)


# ------------------------------------------------------------------------------------------ (a)
def test_the_first_screen_shows_install_and_quickstart():
    first_screen = README.read_text(encoding="utf-8").splitlines()[:40]
    for line in ('pip install ".[hf,onnx]"', "bash quickstart.sh demo", "bash quickstart.sh test"):
        assert any(line in text for text in first_screen), f"README's first 40 lines lack {line!r}"


# ------------------------------------------------------------------------------------------ (b)
@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in github_anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_anchor_rule_follows_github():
    """The slug rule the link check relies on, on headings of the kinds these pages use."""
    page = ROOT / "docs" / "training.md"
    assert "recipes-recycle_distilltrainingrecipes" in github_anchors(page)
    assert "mixed-precision-trainprecision-bf16" in github_anchors(page)
    assert "5-onnx" in github_anchors(ROOT / "docs" / "inference.md")


# ------------------------------------------------------------------------------------------ (c)
@pytest.mark.parametrize("dotted", api_names())
def test_every_name_on_the_api_page_imports(dotted):
    resolve(dotted)


@pytest.mark.parametrize("dotted", changelog_new_names())
def test_every_new_name_in_the_changelog_imports(dotted):
    resolve(dotted)


def test_the_name_lists_are_not_empty():
    """Guards the two parsers above: a table format change must not silence the import checks."""
    assert len(api_names()) >= 40
    assert len(changelog_new_names()) >= 100


@pytest.mark.parametrize("name", [
    "build_student", "load_student", "list_presets", "StudentConfig", "ConfigError", "StudentModel",
    "save_compact", "read_compact", "optimize_for_inference", "export_onnx", "OnnxStudentUpstream",
    "export_hf", "StudentUpstream", "register_upstreams", "load_upstream", "load_released",
    "continuous_integrate_and_fire", "acoustic_contrastive_loss", "linguistic_regression_loss",
    "masking_distillation_loss", "star_loss", "hint_loss", "Trainer", "load_train_config", "load_teacher",
    "families.FAMILIES", "families.RELEASES",
])
def test_the_api_page_lists_the_main_names(name):
    assert any(dotted.endswith("." + name) for dotted in api_names()), f"docs/api.md lists no {name}"


# ------------------------------------------------------------------------------------------ (d)
def test_the_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= 300, f"README.md has {lines} lines; move reference material to docs/"


# ------------------------------------------------------------------------------------------ (e)
@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_pages_hold_no_project_history_wording(page):
    text = page.read_text(encoding="utf-8").lower()
    found = [word for word in HISTORY_WORDS if word.lower() in text]
    assert not found, f"{page.relative_to(ROOT)} says {found}"
