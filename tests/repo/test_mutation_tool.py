"""``tools/mutation.py``: its groups exist and name real files, and its kill table counts mutmut's meta files."""

from __future__ import annotations

import configparser
import json
import pathlib

from helpers.tools import load_tool

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_group_mutates_and_runs_files_that_exist():
    groups = sorted((ROOT / "tests" / "mutmut").glob("*.cfg"))
    assert groups
    for cfg in groups:
        parser = configparser.ConfigParser()
        parser.read(cfg)
        section = parser["mutmut"]
        for pattern in section["only_mutate"].split():
            assert list(ROOT.glob(pattern)), (cfg.name, pattern)
        for selection in section["pytest_add_cli_args_test_selection"].split():
            assert (ROOT / selection).exists(), (cfg.name, selection)


def test_the_table_counts_each_status_per_module(tmp_path):
    meta = tmp_path / "recycle_distill" / "pkg" / "mod.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"a": 1, "b": 3, "c": 0, "d": 36, "e": None, "f": -11, "g": 1}
    meta.write_text(json.dumps({"exit_code_by_key": {f"m.{k}": v for k, v in codes.items()}}))
    mutation = load_tool("mutation")
    table = mutation.statuses(tmp_path)
    assert dict(table["recycle_distill/pkg/mod.py"]) == {"killed": 3, "survived": 1, "timeout": 1,
                                                          "not checked": 1, "other": 1}
    row = mutation.format_table(table).splitlines()[-1]
    # 3 killed of the 6 run; the Wilson 95% interval of 3/6 is 0.188-0.812 (one mutant not run).
    assert row == "| `recycle_distill/pkg/mod.py` | 7 | 3 | 1 | 1 | 1 | 1 | 50.0 (19-81) |"


def test_a_sample_draws_per_module_the_same_for_a_seed(tmp_path):
    mutation = load_tool("mutation")
    for module, count in (("big.py", 50), ("small.py", 3)):
        (tmp_path / f"{module}.meta").write_text(json.dumps({"exit_code_by_key": {f"{module}.m{i}": None for i in range(count)}}))
    names = mutation.mutant_names(tmp_path)
    drawn = mutation.sample_names(names, 10, seed=4)
    assert drawn == mutation.sample_names(names, 10, seed=4)
    assert drawn != mutation.sample_names(names, 10, seed=5)
    assert sum(n.startswith("big.py.") for n in drawn) == 10 and len(set(drawn)) == 13
    assert {n for n in drawn if n.startswith("small.py.")} == {f"small.py.m{i}" for i in range(3)}


def test_the_scratch_copy_keeps_links_as_links(tmp_path, monkeypatch):
    mutation = load_tool("mutation")
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "real.yaml").write_text("a: 1\n")
    (tree / "pkg" / "link.yaml").symlink_to("real.yaml")
    import subprocess

    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "add", "."], check=True)
    monkeypatch.setattr(mutation, "ROOT", tree)
    mutation.copy_tree(tmp_path / "scratch")
    copied = tmp_path / "scratch" / "pkg" / "link.yaml"
    assert copied.is_symlink() and copied.readlink().as_posix() == "real.yaml" and copied.read_text() == "a: 1\n"
