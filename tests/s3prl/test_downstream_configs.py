"""Tests for the shipped downstream_configs/ (pre-patched SUPERB configs)."""

from __future__ import annotations

import fnmatch
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from recycle_distill.s3prl import patch as ph  # the library behind patch_hub.py

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "data" / "s3prl_tree"
PACKAGE_DIR = REPO / "recycle_distill" / "s3prl" / "downstream_configs"
TOP_LEVEL = REPO / "downstream_configs"
# The S3PRL originals sit beside the repository (../shared/facts/...) where they are available.
SHARED_ORIGINALS = REPO.parent / "shared" / "facts" / "s3prl-0.4.18-downstream-configs"


def _load(name: str, path: Path):
    """Import a standalone script as a module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make = _load("make_downstream_configs", REPO / "tools" / "make_downstream_configs.py")
TASKS = {task.key: task for task in ph.TASKS}
WARMUP = {"PR": 1400, "KS": 1400, "IC": 1000, "SID": 5000, "ER": 1400, "ASR": 1400,
          "SF": 1400, "ASV": 6000}


def shipped(key: str) -> str:
    """Text of a task's shipped config."""
    return (PACKAGE_DIR / TASKS[key].shipped).read_text()


def original(key: str) -> str:
    """Unpatched text of a task's config (fixture)."""
    return (FIXTURE / "s3prl" / "downstream" / TASKS[key].config).resolve().read_text()


def generated_names() -> set[str]:
    """What the generator writes: the task table's files, the README and the ASR dictionary."""
    return {task.shipped for task in ph.TASKS} | {"README.md", make.DICT_NAME}


def test_regenerating_gives_identical_files():
    files = make.build_files(FIXTURE)
    assert sorted(files) == sorted(generated_names())
    on_disk = {path.name: path.read_bytes() for path in PACKAGE_DIR.iterdir() if path.is_file()}
    for name, data in files.items():
        assert on_disk[name] == data, f"{name} is stale: run tools/make_downstream_configs.py"
    # Anything else in the folder (e.g. the hand-written cif_asr.yaml) is not the generator's.


def test_hand_written_files_are_never_overwritten_or_flagged(tmp_path, capsys):
    out = tmp_path / "configs"
    shutil.copytree(PACKAGE_DIR, out)
    hand_written = b"# hand-written CIF-HieraDist config\nrunner:\n  total_steps: 10\n"
    (out / "cif_asr.yaml").write_bytes(hand_written)
    assert make.main(["--check", "--out", str(out)]) == 0
    assert "cif_asr" not in capsys.readouterr().out
    (out / "asr.yaml").write_text("stale\n")
    assert make.main(["--out", str(out)]) == 0
    assert (out / "cif_asr.yaml").read_bytes() == hand_written
    assert (out / "asr.yaml").read_bytes() == (PACKAGE_DIR / "asr.yaml").read_bytes()


def test_shared_originals_are_found_relative_to_the_repository():
    assert SHARED_ORIGINALS.relative_to(REPO.parent) == Path("shared/facts/s3prl-0.4.18-downstream-configs")


def test_check_mode_reports_up_to_date(capsys):
    assert make.main(["--check"]) == 0


def test_top_level_folder_is_the_package_folder():
    assert TOP_LEVEL.is_symlink()
    assert TOP_LEVEL.resolve() == PACKAGE_DIR.resolve()


def test_file_names_follow_the_scheme():
    assert {task.shipped for task in ph.TASKS} == {
        "ctc_libriphone.yaml", "speech_commands.yaml", "fluent_commands.yaml", "voxceleb1.yaml",
        "emotion.yaml", "asr.yaml", "ctc_snips.yaml", "sv_voxceleb1.yaml", "quesst14_dtw.yaml",
        "diarization.yaml"}
    for task in ph.TASKS:
        assert task.shipped.startswith(task.downstream)


@pytest.mark.parametrize("key", sorted(TASKS))
def test_shipped_yaml_values(key):
    after = yaml.safe_load(shipped(key))
    before = yaml.safe_load(original(key))
    if key in WARMUP:
        assert after.pop("scheduler") == {"name": "linear_schedule_with_warmup",
                                          "num_warmup_steps": WARMUP[key]}
    else:
        assert "scheduler" not in after
    if key == "SID":
        assert isinstance(after["optimizer"]["lr"], float) and after["optimizer"]["lr"] == 0.001
        after["optimizer"]["lr"] = before["optimizer"]["lr"]
    assert after == before


@pytest.mark.parametrize("key", sorted(TASKS))
def test_shipped_body_is_the_patched_original(key):
    header = make.header(TASKS[key])
    text = shipped(key)
    assert text.startswith(header)
    body = text[len(header):]
    expected = ph.patch_config_text(original(key), TASKS[key])
    assert body.rstrip("\n") == expected.rstrip("\n")


def test_asr_dict_is_shipped():
    assert (PACKAGE_DIR / "asr_char.dict").read_bytes() == \
        (FIXTURE / "s3prl" / "downstream" / "asr" / "char.dict").read_bytes()


def test_package_data_patterns_cover_the_files():
    patterns = ["*.yaml", "*.dict"]  # setup.py: downstream_configs/*.yaml, downstream_configs/*.dict
    for path in PACKAGE_DIR.iterdir():
        if path.name in generated_names() - {"README.md"}:
            assert any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns), path.name
    setup_text = (REPO / "setup.py").read_text()
    for pattern in patterns:
        assert f"downstream_configs/{pattern}" in setup_text


def test_readme_table_lists_every_task():
    readme = (PACKAGE_DIR / "README.md").read_text()
    for task in ph.TASKS:
        row = next(line for line in readme.splitlines() if line.startswith(f"| {task.key} ("))
        assert f"`{task.downstream}`" in row and f"`{task.shipped}`" in row
    assert "| 1.0e-3 |" in readme  # SID


@pytest.mark.skipif(not SHARED_ORIGINALS.is_dir(),
                    reason=f"the S3PRL 0.4.18 originals are not at {SHARED_ORIGINALS} (../shared beside the repository)")
def test_fixture_configs_are_the_s3prl_originals():
    for task in ph.TASKS:
        source = task.config
        if task.key == "ASV":
            source = "sv_voxceleb1/configs/amsoftmax.yaml"
        assert (SHARED_ORIGINALS / source).read_bytes() == original(task.key).encode(), task.key
    assert (SHARED_ORIGINALS / "asr" / "char.dict").read_bytes() == \
        (FIXTURE / "s3prl" / "downstream" / "asr" / "char.dict").read_bytes()
