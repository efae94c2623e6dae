"""patch_hub behaviours the mutation run of ``s3prl/patch/`` found untested (docs/development.md,
Mutation testing): the exact text of the blocks it appends, its report lines and warnings, the
dry-run diff of new files and of files without a final newline, the message of a write that
fails on something other than an OSError, and the temp folders a ``--copy`` run leaves (none).

Every test runs the CLI on a copy of the fixture tree tests/data/s3prl_tree/ and reads back files
on disk, stdout and stderr.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recycle_distill.cli.patch_hub import main as patch_hub_main
from recycle_distill.s3prl import patch as ph
from recycle_distill.s3prl.patch import inserts

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "s3prl_tree"

# What a patch appends to S3PRL's downstream/runner.py and schedulers.py, spelled out.
RUNNER_BLOCK = """\
# >>> recycle-distill checkpoint allow-list >>>
# Added by recycle-distill's patch_hub.py (weights-only torch.load of S3PRL's states-*.ckpt allows argparse.Namespace);
# undo with: python patch_hub.py --revert <s3prl root>
import argparse as _recycle_distill_argparse
import torch.serialization as _recycle_distill_serialization
if hasattr(_recycle_distill_serialization, "add_safe_globals"):  # torch >= 2.4
    _recycle_distill_serialization.add_safe_globals([_recycle_distill_argparse.Namespace])
# <<< recycle-distill checkpoint allow-list <<<
"""
SCHEDULERS_BLOCK = """\
# >>> recycle-distill tri-stage scheduler >>>
# Added by recycle-distill's patch_hub.py (scheduler name tri_stage_schedule);
# undo with: python patch_hub.py --revert <s3prl root>
try:
    from recycle_distill.downstreams.cif_asr.tri_stage import get_tri_stage_schedule  # noqa: F401
except ImportError:  # recycle_distill is not importable here: only this scheduler is missing
    pass
# <<< recycle-distill tri-stage scheduler <<<
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the fixture tree (symlinks kept) with a one-line runner.py and schedulers.py."""
    dst = tmp_path / "s3prl_checkout"
    shutil.copytree(FIXTURE, dst, symlinks=True)
    (dst / "s3prl" / "downstream" / "runner.py").write_text("import torch\n")
    (dst / "s3prl" / "schedulers.py").write_text("import torch\n")
    return dst


@pytest.fixture
def upstreams(tmp_path: Path) -> Path:
    """Stand-in ``upstreams/<family>`` folders for ``--copy``."""
    folder = tmp_path / "repo_upstreams"
    for family in ph.FAMILIES:
        (folder / family).mkdir(parents=True)
        (folder / family / "hubconf.py").write_text(f"def {family}():\n    return '{family}'\n")
    return folder


def run(capsys, *args) -> tuple[int, str, str]:
    """The CLI in-process: (exit status, stdout, stderr)."""
    code = patch_hub_main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_appended_blocks_are_exactly_the_documented_text(root, capsys):
    assert run(capsys, root)[0] == ph.EXIT_OK
    package = root / "s3prl"
    assert (package / "downstream" / "runner.py").read_text() == "import torch\n\n" + RUNNER_BLOCK
    assert (package / "schedulers.py").read_text() == "import torch\n\n" + SCHEDULERS_BLOCK
    # The table the blocks are built from gives the same lines when asked again (the module
    # constant is built once, at import).
    assert "\n".join(inserts._allow_list_body()) + "\n" in RUNNER_BLOCK


def test_a_second_copy_run_reports_each_copy_it_keeps_and_each_it_refreshes(root, upstreams, capsys):
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK
    (upstreams / "starhubert" / "hubconf.py").write_text("def starhubert():\n    pass\n")
    code, out, err = run(capsys, "--copy", "--upstreams", upstreams, root)
    assert code == ph.EXIT_OK and err == ""
    copies = [line for line in out.splitlines() if "s3prl/upstream/" in line]
    assert copies == [
        "  unchanged   s3prl/upstream/armhubert  (already copied)",
        "  unchanged   s3prl/upstream/maskhubert  (already copied)",
        f"  copy        s3prl/upstream/starhubert  (from {upstreams / 'starhubert'})",
        "  unchanged   s3prl/upstream/fithubert  (already copied)",
    ]


def test_a_foreign_upstream_folder_gets_a_one_line_warning(root, upstreams, capsys):
    foreign = root / "s3prl" / "upstream" / "fithubert"
    foreign.mkdir()
    (foreign / "hubconf.py").write_text("# someone else's\n")
    code, _, err = run(capsys, "--copy", "--upstreams", upstreams, root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == [
        "WARNING: s3prl/upstream/fithubert: exists and differs from upstreams/fithubert; left alone"]


def test_copy_runs_leave_no_temp_folder_beside_the_copies(root, upstreams, capsys):
    upstream = root / "s3prl" / "upstream"
    before = sorted(entry.name for entry in upstream.iterdir())
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK
    (upstreams / "armhubert" / "hubconf.py").write_text("def armhubert():\n    pass\n")
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK  # replaces a stale copy
    assert sorted(entry.name for entry in upstream.iterdir()) == sorted([*before, *ph.FAMILIES])
    assert run(capsys, "--revert", root)[0] == ph.EXIT_OK
    assert sorted(entry.name for entry in upstream.iterdir()) == before


def test_the_dry_run_shows_new_shim_files_as_created_from_nothing(root, capsys):
    code, out, _ = run(capsys, "--dry-run", root)
    assert code == ph.EXIT_OK
    assert (
        "--- a/s3prl/downstream/cif_asr/__init__.py\n"
        "+++ b/s3prl/downstream/cif_asr/__init__.py\n"
        "@@ -0,0 +1 @@\n"
        "+# Created by recycle-distill's patch_hub.py; removed by patch_hub.py --revert.\n"
        "--- a/s3prl/downstream/cif_asr/expert.py\n"
        "+++ b/s3prl/downstream/cif_asr/expert.py\n"
        "@@ -0,0 +1 @@\n"
        "+from recycle_distill.downstreams.cif_asr.expert import DownstreamExpert  # noqa: F401\n"
    ) in out


def test_the_dry_run_marks_a_file_without_a_final_newline(root, capsys):
    runner = root / "s3prl" / "downstream" / "runner.py"
    runner.write_text("import os\nimport sys\nimport torch")  # three lines, the last one unterminated
    code, out, _ = run(capsys, "--dry-run", root)
    assert code == ph.EXIT_OK
    block = "".join(f"+{line}\n" for line in RUNNER_BLOCK.splitlines())
    assert (
        "--- a/s3prl/downstream/runner.py\n"
        "+++ b/s3prl/downstream/runner.py\n"
        "@@ -1,3 +1,12 @@\n"
        " import os\n"
        " import sys\n"
        "-import torch\n"
        "\\ No newline at end of file\n"
        "+import torch\n"
        "+\n" + block
    ) in out
    assert runner.read_text() == "import os\nimport sys\nimport torch"  # a dry run writes nothing


def test_a_write_refused_by_the_atomic_writer_is_named_in_one_line(root, capsys):
    # A folder where the hub's backup goes: the atomic writer refuses it (not an OSError).
    backup = root / "s3prl" / ("hub.py" + ph.BACKUP_SUFFIX)
    backup.mkdir()
    code, out, err = run(capsys, root)
    assert code == ph.EXIT_FAILED
    assert err == (
        f"error: could not write s3prl/hub.py{ph.BACKUP_SUFFIX} ({backup}: is a folder, not a regular file; "
        f"refusing to write over it); stopped part way: run `python patch_hub.py --revert {root}` to restore "
        f"it, or fix the cause and run again\n")
    assert backup.is_dir() and list(backup.iterdir()) == []


def test_revert_reports_each_block_it_removes_and_restores_the_modules(root, capsys):
    before = {key: (root / "s3prl" / key).read_bytes() for key in ("downstream/runner.py", "schedulers.py")}
    assert run(capsys, root)[0] == ph.EXIT_OK
    code, out, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_OK and err == ""
    assert "  restore     s3prl/downstream/runner.py  (checkpoint allow-list removed)" in out.splitlines()
    assert "  restore     s3prl/schedulers.py  (tri-stage scheduler removed)" in out.splitlines()
    assert {key: (root / "s3prl" / key).read_bytes() for key in before} == before
    assert sorted(root.rglob("*" + ph.BACKUP_SUFFIX)) == []


def test_a_tree_with_only_the_second_module_is_reverted_too(root, capsys):
    (root / "s3prl" / "downstream" / "runner.py").unlink()  # the first module of the table missing
    schedulers = root / "s3prl" / "schedulers.py"
    assert run(capsys, root)[0] == ph.EXIT_OK
    assert schedulers.read_text() == "import torch\n\n" + SCHEDULERS_BLOCK
    assert run(capsys, "--revert", root)[0] == ph.EXIT_OK
    assert schedulers.read_text() == "import torch\n"
    assert not ph.backup_path(schedulers).exists() and not (root / "s3prl" / ph.MANIFEST_NAME).exists()


def test_a_module_whose_block_was_cut_by_hand_and_edited_keeps_its_backup(root, capsys):
    runner = root / "s3prl" / "downstream" / "runner.py"
    assert run(capsys, root)[0] == ph.EXIT_OK
    runner.write_text("import torch\nimport os\n")  # no block any more, and not the original either
    code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == [
        "WARNING: s3prl/downstream/runner.py: has no recycle-distill checkpoint allow-list block but differs from "
        f"runner.py{ph.BACKUP_SUFFIX}; left alone (backup kept)"]
    assert runner.read_text() == "import torch\nimport os\n"
    assert ph.backup_path(runner).read_text() == "import torch\n"


def test_a_folder_removal_stopped_part_way_is_finished_by_the_next_revert(root, capsys, monkeypatch):
    import errno

    from recycle_distill.s3prl.patch import base

    (root / "s3prl" / "downstream" / "runner.py").unlink()
    (root / "s3prl" / "schedulers.py").unlink()
    before = sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))
    assert run(capsys, root)[0] == ph.EXIT_OK
    real_rmtree, failed = shutil.rmtree, []

    def rmtree_failing_once(path, *args, **kwargs):
        # The shim's removal (rename to a temp, then rmtree) fails once, as on a flaky disk.
        if ".cif_asr." in Path(path).name and not failed:
            failed.append(Path(path).name)
            raise OSError(errno.EIO, "Input/output error")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(base.shutil, "rmtree", rmtree_failing_once)
    code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_FAILED
    assert err == ("error: could not write s3prl/downstream/cif_asr (Input/output error); stopped part way: "
                   "run --revert again once the cause is fixed\n")
    (left,) = failed
    assert (root / "s3prl" / "downstream" / left).is_dir()  # the renamed shim, still there
    code, out, _ = run(capsys, "--revert", root)
    assert code == ph.EXIT_OK
    assert f"  clean       s3prl/downstream/{left}  (temporary file left by an interrupted run)" in out.splitlines()
    assert sorted(path.relative_to(root).as_posix() for path in root.rglob("*")) == before


PATCH_REPORT = """\
  register    s3prl/hub.py  (armhubert, maskhubert, starhubert, fithubert from recycle_distill.upstreams)
  add         s3prl/downstream/runner.py  (weights-only torch.load of S3PRL's states-*.ckpt allows argparse.Namespace)
  add         s3prl/schedulers.py  (scheduler name tri_stage_schedule)
  patch       s3prl/downstream/ctc/libriphone.yaml  (PR: scheduler uncommented)
  patch       s3prl/downstream/speech_commands/config.yaml  (KS: scheduler uncommented)
  patch       s3prl/downstream/fluent_commands/config.yaml  (IC: scheduler uncommented)
  patch       s3prl/downstream/voxceleb1/config.yaml  (SID: scheduler uncommented, lr 1.0e-4 -> 1.0e-3)
  patch       s3prl/downstream/emotion/config.yaml  (ER: scheduler uncommented)
  patch       s3prl/downstream/asr/config.yaml  (ASR: scheduler uncommented)
  patch       s3prl/downstream/ctc/snips.yaml  (SF: scheduler uncommented)
  patch       s3prl/downstream/sv_voxceleb1/config.yaml -> configs/amsoftmax.yaml  (ASV: scheduler uncommented)
  skip        s3prl/downstream/quesst14_dtw/config.yaml  (QbE: no tweaks needed)
  skip        s3prl/downstream/diarization/config.yaml  (SD: no tweaks needed)
  register    s3prl/downstream/cif_asr  (cif_asr downstream (expert.py re-exports recycle_distill's))
Done: 12 item(s) patched. Originals kept as *.recycle-distill.orig; undo with --revert.
"""
# The revert after ASR's config was put back by hand (its backup still there).
REVERT_REPORT = """\
  restore     s3prl/hub.py  (registration removed)
  restore     s3prl/downstream/runner.py  (checkpoint allow-list removed)
  restore     s3prl/schedulers.py  (tri-stage scheduler removed)
  restore     s3prl/downstream/ctc/libriphone.yaml  (PR)
  restore     s3prl/downstream/speech_commands/config.yaml  (KS)
  restore     s3prl/downstream/fluent_commands/config.yaml  (IC)
  restore     s3prl/downstream/voxceleb1/config.yaml  (SID)
  restore     s3prl/downstream/emotion/config.yaml  (ER)
  unchanged   s3prl/downstream/asr/config.yaml  (ASR: already original)
  restore     s3prl/downstream/ctc/snips.yaml  (SF)
  restore     s3prl/downstream/sv_voxceleb1/configs/amsoftmax.yaml  (ASV)
  remove      s3prl/downstream/cif_asr  (cif_asr downstream shim)
Done: 11 item(s) reverted.
"""


def test_patch_and_revert_report_every_file_in_one_line_each(root, capsys):
    code, out, err = run(capsys, root)
    assert code == ph.EXIT_OK and err == ""
    lines = out.splitlines(keepends=True)
    assert lines[0] == f"S3PRL git checkout: {root}\n"
    assert "".join(lines[1:]).startswith(PATCH_REPORT)  # then the note on the s3prl this Python imports
    asr = root / "s3prl" / "downstream" / "asr" / "config.yaml"
    asr.write_bytes(ph.backup_path(asr).read_bytes())
    code, out, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_OK and err == ""
    assert out == f"S3PRL git checkout: {root}\n" + REVERT_REPORT
    assert sorted(root.rglob("*" + ph.BACKUP_SUFFIX)) == []


def test_a_config_changed_since_patching_does_not_stop_the_revert_of_the_others(root, capsys):
    assert run(capsys, root)[0] == ph.EXIT_OK
    sid = root / "s3prl" / "downstream" / "voxceleb1" / "config.yaml"
    sid.write_bytes(sid.read_bytes() + b"# my note\n")
    code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == [
        "WARNING: s3prl/downstream/voxceleb1/config.yaml: SID: changed since patch_hub.py patched it; left alone "
        f"(original kept in config.yaml{ph.BACKUP_SUFFIX})"]
    for task in ph.TASKS:  # every other config is back to the fixture's bytes, its backup gone
        path = (root / "s3prl" / "downstream" / task.config).resolve()
        if task.key != "SID":
            assert path.read_bytes() == (FIXTURE / "s3prl" / "downstream" / task.config).resolve().read_bytes()
            assert not ph.backup_path(path).exists()
    assert ph.backup_path(sid).exists()


def test_compiled_files_neither_make_a_copy_stale_nor_keep_it_from_being_reverted(root, upstreams, capsys):
    (upstreams / "armhubert" / "hubconf.pyc").write_bytes(b"compiled beside the source")
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK
    copy = root / "s3prl" / "upstream" / "armhubert"
    assert sorted(path.name for path in copy.iterdir()) == ["hubconf.py"]
    code, out, _ = run(capsys, "--copy", "--upstreams", upstreams, root)
    assert code == ph.EXIT_OK and "Nothing changed: already patched." in out.splitlines()
    (copy / "hubconf.pyc").write_bytes(b"compiled by S3PRL's Python")
    code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_OK and err == ""
    assert not copy.exists()


def test_a_manifest_entry_without_hashes_is_named_and_ignored(root, upstreams, capsys):
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK
    manifest = root / "s3prl" / ph.MANIFEST_NAME
    data = json.loads(manifest.read_text())
    data["copied"]["upstream/armhubert"] = {}
    manifest.write_text(json.dumps(data))
    code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_WARNINGS
    assert (f"WARNING: s3prl/{ph.MANIFEST_NAME}: entry 'upstream/armhubert' has no file hashes; ignored "
            "(its folder is left alone)") in err.splitlines()
    assert (root / "s3prl" / "upstream" / "armhubert" / "hubconf.py").is_file()
    assert not (root / "s3prl" / "upstream" / "maskhubert").exists()


def test_a_manifest_entry_that_became_a_link_out_of_the_tree_is_named_and_ignored(root, upstreams, tmp_path, capsys):
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK
    copy = root / "s3prl" / "upstream" / "armhubert"
    outside = tmp_path / "outside_armhubert"
    shutil.copytree(copy, outside)
    shutil.rmtree(copy)
    copy.symlink_to(outside, target_is_directory=True)
    code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_WARNINGS
    assert (f"WARNING: s3prl/{ph.MANIFEST_NAME}: entry 'upstream/armhubert' leads outside the S3PRL tree; "
            "ignored") in err.splitlines()
    assert copy.is_symlink() and (outside / "hubconf.py").read_text() == "def armhubert():\n    return 'armhubert'\n"
    assert not (root / "s3prl" / "upstream" / "maskhubert").exists()


def test_files_a_revert_leaves_alone_stay_recorded_in_the_manifest(root, capsys):
    assert run(capsys, root)[0] == ph.EXIT_OK
    package = root / "s3prl"
    for key, begin in (("hub.py", ph.HUB_BEGIN), ("downstream/runner.py", inserts.INSERTS[0].begin)):
        with open(package / key, "a") as file:  # a second begin marker: the block can no longer be told
            file.write(begin + "\n")
    code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == [
        "WARNING: s3prl/hub.py: its recycle-distill marker comments are unbalanced or repeated; left alone",
        "WARNING: s3prl/downstream/runner.py: its recycle-distill marker comments are unbalanced or repeated; "
        "left alone"]
    manifest = json.loads((package / ph.MANIFEST_NAME).read_text())
    assert manifest["patched"] == ["downstream/runner.py", "hub.py"] and manifest["copied"] == {}
    assert ph.backup_path(package / "hub.py").is_file() and ph.backup_path(package / "downstream/runner.py").is_file()


def test_the_shim_gets_the_modes_a_plain_mkdir_and_open_would_give(root, capsys):
    import os
    import stat

    umask = os.umask(0o027)  # a umask that differs from the usual 022 in the group bits
    try:
        assert run(capsys, root)[0] == ph.EXIT_OK
    finally:
        os.umask(umask)
    shim = root / "s3prl" / "downstream" / "cif_asr"
    assert stat.S_IMODE(shim.stat().st_mode) == 0o750
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in shim.iterdir()} == {
        "__init__.py": 0o640, "expert.py": 0o640}


SECOND_PATCH_REPORT = """\
  unchanged   s3prl/hub.py  (upstreams already registered)
  unchanged   s3prl/downstream/runner.py  (checkpoint allow-list already added)
  unchanged   s3prl/schedulers.py  (tri-stage scheduler already added)
  unchanged   s3prl/downstream/ctc/libriphone.yaml  (PR: already patched)
  unchanged   s3prl/downstream/speech_commands/config.yaml  (KS: already patched)
  unchanged   s3prl/downstream/fluent_commands/config.yaml  (IC: already patched)
  unchanged   s3prl/downstream/voxceleb1/config.yaml  (SID: already patched)
  unchanged   s3prl/downstream/emotion/config.yaml  (ER: already patched)
  unchanged   s3prl/downstream/asr/config.yaml  (ASR: already patched)
  unchanged   s3prl/downstream/ctc/snips.yaml  (SF: already patched)
  unchanged   s3prl/downstream/sv_voxceleb1/config.yaml -> configs/amsoftmax.yaml  (ASV: already patched)
  skip        s3prl/downstream/quesst14_dtw/config.yaml  (QbE: no tweaks needed)
  skip        s3prl/downstream/diarization/config.yaml  (SD: no tweaks needed)
  unchanged   s3prl/downstream/cif_asr  (cif_asr downstream already registered)
Nothing changed: already patched.
"""


def test_a_second_patch_reports_every_file_as_unchanged(root, capsys):
    assert run(capsys, root)[0] == ph.EXIT_OK
    code, out, err = run(capsys, root)
    assert code == ph.EXIT_OK and err == ""
    assert out.startswith(f"S3PRL git checkout: {root}\n" + SECOND_PATCH_REPORT)


def test_the_manifest_forgets_the_copies_a_finished_refresh_replaced(root, upstreams, capsys):
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK
    (upstreams / "starhubert" / "hubconf.py").write_text("def starhubert():\n    pass\n")
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK
    manifest = json.loads((root / "s3prl" / ph.MANIFEST_NAME).read_text())
    assert sorted(manifest) == ["copied", "created", "format", "patched", "tool"]  # no "pending" left
    package = root / "s3prl"
    assert manifest["copied"] == {f"upstream/{family}": ph.tree_hashes(package / "upstream" / family)
                                  for family in ph.FAMILIES}


def test_a_manifest_removal_that_fails_is_named_and_the_next_revert_finishes(root, capsys, monkeypatch):
    import errno

    before = sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))
    assert run(capsys, root)[0] == ph.EXIT_OK
    real_unlink = Path.unlink

    def unlink(path, *args, **kwargs):
        if path.name == ph.MANIFEST_NAME:
            raise OSError(errno.EIO, "Input/output error")
        return real_unlink(path, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(Path, "unlink", unlink)
        code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_FAILED
    assert err == (f"error: could not write s3prl/{ph.MANIFEST_NAME} (Input/output error); stopped part way: "
                   "run --revert again once the cause is fixed\n")
    assert run(capsys, "--revert", root)[0] == ph.EXIT_OK
    assert sorted(path.relative_to(root).as_posix() for path in root.rglob("*")) == before


def test_a_commented_scheduler_without_its_warmup_line_is_left_alone(root, capsys):
    asr = root / "s3prl" / "downstream" / "asr" / "config.yaml"
    text = asr.read_text()
    lines = text.splitlines(keepends=True)
    (warmup,) = [i for i, line in enumerate(lines) if line.startswith("#") and "num_warmup_steps:" in line]
    asr.write_text("".join(lines[:warmup] + lines[warmup + 1:]))
    edited = asr.read_bytes()
    code, _, err = run(capsys, root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == [
        "WARNING: s3prl/downstream/asr/config.yaml: ASR: the commented scheduler block is not '# scheduler:' "
        "followed by its 'name:' and 'num_warmup_steps:' lines; left alone"]
    assert asr.read_bytes() == edited and not ph.backup_path(asr).exists()


def test_an_identical_shim_this_tool_did_not_create_is_not_adopted(root, capsys):
    from recycle_distill.s3prl.patch.registration import shim_files

    shim = root / "s3prl" / "downstream" / "cif_asr"
    shim.mkdir()
    for name, data in shim_files("cif_asr").items():  # put there by hand, byte for byte the shim
        (shim / name).write_bytes(data)
    assert run(capsys, root)[0] == ph.EXIT_OK
    assert "created" not in json.loads((root / "s3prl" / ph.MANIFEST_NAME).read_text())
    code, out, _ = run(capsys, "--revert", root)
    assert code == ph.EXIT_OK and "cif_asr" not in out
    assert sorted(path.name for path in shim.iterdir()) == ["__init__.py", "expert.py"]


@pytest.mark.parametrize("indent", ["  ", "\t"], ids=["spaces", "tab"])
def test_a_commented_scheduler_with_a_third_key_is_left_alone(root, capsys, indent):
    asr = root / "s3prl" / "downstream" / "asr" / "config.yaml"
    lines = asr.read_text().splitlines(keepends=True)
    (warmup,) = [i for i, line in enumerate(lines) if line.startswith("#") and "num_warmup_steps:" in line]
    asr.write_text("".join(lines[:warmup + 1] + [f"#{indent}last_epoch: -1\n"] + lines[warmup + 1:]))
    edited = asr.read_bytes()
    code, _, err = run(capsys, root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == [
        "WARNING: s3prl/downstream/asr/config.yaml: ASR: the commented scheduler block has more keys than "
        "'name:' and 'num_warmup_steps:'; left alone"]
    assert asr.read_bytes() == edited and not ph.backup_path(asr).exists()


def test_every_temp_a_run_moves_through_is_one_the_next_run_would_clean(root, upstreams, capsys, monkeypatch):
    """A run killed mid-write leaves its temp beside the target; the next run removes only temps
    named ``.<target>.<8 characters>.tmp`` (runs.plan_stale_temps), so every temp must be so named."""
    import os
    import re

    moves = []

    def recording(real):
        def move(src, dst, *args, **kwargs):
            src, dst = Path(src), Path(dst)
            beside = [path for path in (src, *src.parents) if path.parent == dst.parent]
            if beside:  # a move between two entries of one folder: a temp and its target
                moves.append((beside[0].name, dst.name))
            return real(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "replace", recording(os.replace))
    monkeypatch.setattr(os, "rename", recording(os.rename))
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK
    (upstreams / "armhubert" / "hubconf.py").write_text("def armhubert():\n    pass\n")
    assert run(capsys, "--copy", "--upstreams", upstreams, root)[0] == ph.EXIT_OK
    assert run(capsys, "--revert", root)[0] == ph.EXIT_OK
    # file writes, the shim folder, the copies (new and replaced), the removal of a folder
    assert {"hub.py", "config.yaml", "cif_asr", "armhubert", "fithubert"} <= {name for pair in moves for name in pair}
    for first, second in moves:
        target, temp = (first, second) if second.startswith(f".{first}.") else (second, first)
        assert re.fullmatch(rf"\.{re.escape(target)}\.[A-Za-z0-9_]{{8}}\.tmp", temp), (first, second)


def test_an_edited_module_block_is_left_alone_with_a_warning(root, capsys):
    runner = root / "s3prl" / "downstream" / "runner.py"
    assert run(capsys, root)[0] == ph.EXIT_OK
    runner.write_text(runner.read_text().replace("torch >= 2.4", "torch >= 2.5"))
    edited = runner.read_bytes()
    code, _, err = run(capsys, root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == [
        "WARNING: s3prl/downstream/runner.py: its recycle-distill checkpoint allow-list block differs from the "
        "expected one (edited, or written by another version); left alone. Run --revert first"]
    assert runner.read_bytes() == edited


def test_a_crlf_hub_is_patched_once_and_restored_byte_for_byte(root, capsys):
    hub = root / "s3prl" / "hub.py"
    original = hub.read_bytes().replace(b"\n", b"\r\n")
    hub.write_bytes(original)
    assert run(capsys, root)[0] == ph.EXIT_OK
    assert hub.read_bytes().endswith(ph.hub_block(False).replace("\n", "\r\n").encode())
    code, out, err = run(capsys, root)  # the CRLF block is recognised as ours
    assert code == ph.EXIT_OK and err == "" and "  unchanged   s3prl/hub.py  (upstreams already registered)" in out
    assert run(capsys, "--revert", root)[0] == ph.EXIT_OK
    assert hub.read_bytes() == original


def test_a_scheduler_whose_warmup_is_not_a_number_is_left_alone(root, capsys):
    asr = root / "s3prl" / "downstream" / "asr" / "config.yaml"
    asr.write_text(asr.read_text().replace("#   num_warmup_steps: 1400", "#   num_warmup_steps: many"))
    edited = asr.read_bytes()
    code, _, err = run(capsys, root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == [
        "WARNING: s3prl/downstream/asr/config.yaml: ASR: it has no 'scheduler' with 'name' and 'num_warmup_steps'; "
        "left alone"]
    assert asr.read_bytes() == edited


def test_a_copy_run_says_where_the_hub_imports_the_families_from(root, upstreams, capsys):
    code, out, _ = run(capsys, "--copy", "--upstreams", upstreams, root)
    assert code == ph.EXIT_OK
    assert ("  register    s3prl/hub.py  (armhubert, maskhubert, starhubert, fithubert from "
            "s3prl/upstream/<family>)") in out.splitlines()


def test_a_config_edited_after_patching_is_named_and_stays_recorded(root, capsys):
    assert run(capsys, root)[0] == ph.EXIT_OK
    sid = root / "s3prl" / "downstream" / "voxceleb1" / "config.yaml"
    sid.write_bytes(sid.read_bytes() + b"# x\n")
    code, _, err = run(capsys, root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == [
        "WARNING: s3prl/downstream/voxceleb1/config.yaml: SID: changed since patch_hub.py patched it "
        f"(backup: config.yaml{ph.BACKUP_SUFFIX}); left alone"]
    assert json.loads((root / "s3prl" / ph.MANIFEST_NAME).read_text())["patched"] == sorted(
        ["hub.py", "downstream/runner.py", "schedulers.py",
         *(f"downstream/{task.config}" for task in ph.TASKS if task.changes)])


def test_configs_tweaked_by_hand_or_missing_are_reported_and_the_rest_patched(root, capsys):
    downstream = root / "s3prl" / "downstream"
    asr = downstream / "asr" / "config.yaml"
    text = asr.read_text()
    for commented in ("# scheduler:", "#   name: linear", "#   num_warmup_steps: 1400"):
        text = text.replace(commented, commented[2:])  # "#" and one space off, as the patch does
    asr.write_text(text)  # the scheduler block uncommented by hand
    (downstream / "ctc" / "libriphone.yaml").unlink()  # the first task's config
    code, out, err = run(capsys, root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == ["WARNING: s3prl/downstream/ctc/libriphone.yaml: PR config is missing; skipped"]
    assert "  unchanged   s3prl/downstream/asr/config.yaml  (ASR: already has the tweaks)" in out.splitlines()
    assert "  patch       s3prl/downstream/ctc/snips.yaml  (SF: scheduler uncommented)" in out.splitlines()
    assert "  skip        s3prl/downstream/diarization/config.yaml  (SD: no tweaks needed)" in out.splitlines()
    assert not ph.backup_path(asr).exists()


def test_a_patch_records_a_new_module_in_the_manifest_before_writing_it(root, capsys, monkeypatch):
    import errno

    from recycle_distill.s3prl.patch import plan as plan_module

    runner = root / "s3prl" / "downstream" / "runner.py"
    runner.unlink()
    assert run(capsys, root)[0] == ph.EXIT_OK  # the shim exists from now on: a later run creates no folder
    runner.write_text("import torch\n")
    real_write = plan_module.atomic_write

    def write(path, data, mode=None):
        if path.name == "runner.py":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data, mode)

    monkeypatch.setattr(plan_module, "atomic_write", write)
    code, _, err = run(capsys, root)
    assert code == ph.EXIT_FAILED and err.startswith(
        "error: could not write s3prl/downstream/runner.py (No space left on device); stopped part way")
    manifest = json.loads((root / "s3prl" / ph.MANIFEST_NAME).read_text())
    assert "downstream/runner.py" in manifest["patched"]  # written first, as a journal
    assert runner.read_text() == "import torch\n" and ph.backup_path(runner).read_text() == "import torch\n"


def test_a_patched_config_deleted_since_stays_recorded_with_its_backup(root, capsys):
    assert run(capsys, root)[0] == ph.EXIT_OK
    sid = root / "s3prl" / "downstream" / "voxceleb1" / "config.yaml"
    sid.unlink()
    code, _, err = run(capsys, root)
    assert code == ph.EXIT_WARNINGS
    assert err.splitlines() == ["WARNING: s3prl/downstream/voxceleb1/config.yaml: SID config is missing; skipped"]
    assert "downstream/voxceleb1/config.yaml" in json.loads((root / "s3prl" / ph.MANIFEST_NAME).read_text())["patched"]
    assert ph.backup_path(sid).is_file()


def test_a_copy_run_that_patches_no_file_still_records_its_copies_first(tmp_path, upstreams, capsys, monkeypatch):
    import errno

    from recycle_distill.s3prl.patch import plan as plan_module

    package = tmp_path / "site-packages" / "s3prl"  # an installed s3prl: no configs
    (package / "downstream").mkdir(parents=True)
    (package / "upstream").mkdir()
    (package / "hub.py").write_text(f"{ph.HUB_BEGIN}\n")  # a lone marker: the hub is left alone
    real_copy = plan_module.copy_tree_atomically

    def copy(src, dst):
        if dst.name == "maskhubert":  # the second copy fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst)

    monkeypatch.setattr(plan_module, "copy_tree_atomically", copy)
    code, _, err = run(capsys, "--copy", "--upstreams", upstreams, package)
    assert code == ph.EXIT_FAILED and "could not write upstream/maskhubert (No space left on device)" in err
    assert (package / "upstream" / "armhubert" / "hubconf.py").is_file()
    manifest = json.loads((package / ph.MANIFEST_NAME).read_text())
    assert "upstream/armhubert" in manifest["copied"] and manifest["patched"] == []
    monkeypatch.undo()
    assert run(capsys, "--revert", package)[0] == ph.EXIT_WARNINGS  # the hub's lone marker is still reported
    assert sorted(path.name for path in (package / "upstream").iterdir()) == []


def test_without_the_installed_package_the_checkouts_upstreams_are_used(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (
        None if name == "recycle_distill.upstreams" else real_find_spec(name, *args)))
    checkout = Path(ph.__file__).resolve().parents[3]
    assert ph.default_upstreams_dir() == checkout / "upstreams"
    assert (checkout / "upstreams" / "armhubert" / "hubconf.py").is_file()


def test_the_shipped_configs_folder_holds_every_tasks_config():
    folder = ph.default_configs_dir()
    assert [task.shipped for task in ph.TASKS if not (folder / task.shipped).is_file()] == []


def test_a_temp_left_beside_a_linked_modules_real_file_is_cleaned(root, capsys):
    # runner.py a link inside the tree (as S3PRL links sv_voxceleb1's config): its writes, and so
    # the temps a killed run leaves, are beside the file it points to.
    package = root / "s3prl"
    (package / "impl").mkdir()
    runner = package / "downstream" / "runner.py"
    (package / "impl" / "runner_impl.py").write_bytes(runner.read_bytes())
    runner.unlink()
    runner.symlink_to("../impl/runner_impl.py")
    stale = package / "impl" / ".runner_impl.py.ab12CD34.tmp"
    stale.write_text("half a runner")
    code, out, _ = run(capsys, root)
    assert code == ph.EXIT_OK
    assert "  clean       s3prl/impl/.runner_impl.py.ab12CD34.tmp  (temporary file left by an interrupted run)" in \
        out.splitlines()
    assert not stale.exists() and runner.is_symlink()


def test_a_file_given_as_the_tree_is_refused_in_one_line(tmp_path, capsys):
    given = tmp_path / "hub.py"
    given.write_text("# not a tree\n")
    code, out, err = run(capsys, given)
    assert code == ph.EXIT_REFUSED and out == ""
    assert err == f"error: {given} is not a directory\n"
