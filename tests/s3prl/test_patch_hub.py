"""Tests for patch_hub.py: hub.py registration and the SUPERB config tweaks.

The S3PRL tree is the fixture tests/data/s3prl_tree/ (S3PRL 0.4.18's hub.py and the git
versions of its SUPERB configs, with sv_voxceleb1/config.yaml a symlink as in git), copied
into a temp dir for every test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from recycle_distill.s3prl import patch as ph  # the library behind patch_hub.py
from recycle_distill.cli.patch_hub import main as patch_hub_main

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "data" / "s3prl_tree"
TASKS = {task.key: task for task in ph.TASKS}

SID_DIFF = """\
--- a/s3prl/downstream/voxceleb1/config.yaml
+++ b/s3prl/downstream/voxceleb1/config.yaml
@@ -16,12 +16,12 @@
 optimizer:
   name: TorchOptim
   torch_optim_name: Adam
-  lr: 1.0e-4
+  lr: 1.0e-3
 
 # # comment the whole scheduler config block to disable learning rate scheduling
-# scheduler:
-#   name: linear_schedule_with_warmup
-#   num_warmup_steps: 5000
+scheduler:
+  name: linear_schedule_with_warmup
+  num_warmup_steps: 5000
 
 downstream_expert: 
   datarc:
"""

ASR_DIFF = """\
--- a/s3prl/downstream/asr/config.yaml
+++ b/s3prl/downstream/asr/config.yaml
@@ -16,9 +16,9 @@
 
 # comment the whole scheduler config block
 # to disable learning rate scheduling
-# scheduler:
-#   name: linear_schedule_with_warmup
-#   num_warmup_steps: 1400
+scheduler:
+  name: linear_schedule_with_warmup
+  num_warmup_steps: 1400
 # comment the whole specaug config block
 # to disable specaug on representation
 
"""

HUB_DIFF = """\
--- a/s3prl/hub.py
+++ b/s3prl/hub.py
@@ -52,3 +52,12 @@
             all_options.append(name)
 
     return all_options
+
+# >>> recycle-distill upstreams >>>
+# Added by recycle-distill's patch_hub.py (hubconfs of the installed recycle_distill package);
+# undo with: python patch_hub.py --revert <s3prl root>
+from recycle_distill.upstreams.armhubert.hubconf import *
+from recycle_distill.upstreams.maskhubert.hubconf import *
+from recycle_distill.upstreams.starhubert.hubconf import *
+from recycle_distill.upstreams.fithubert.hubconf import *
+# <<< recycle-distill upstreams <<<
"""

WARMUP = {"PR": 1400, "KS": 1400, "IC": 1000, "SID": 5000, "ER": 1400, "ASR": 1400,
          "SF": 1400, "ASV": 6000}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fresh copy of the S3PRL fixture tree (symlinks kept)."""
    dst = tmp_path / "s3prl_checkout"
    shutil.copytree(FIXTURE, dst, symlinks=True)
    return dst


def config_path(root: Path, key: str) -> Path:
    """Path of a task's config in a checkout (not resolved)."""
    return root / "s3prl" / "downstream" / TASKS[key].config


def original(key: str) -> str:
    """The unpatched text of a task's config from the fixture."""
    return (FIXTURE / "s3prl" / "downstream" / TASKS[key].config).resolve().read_text()


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: symlink target, or file bytes and mode, or 'dir'."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


def run(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""
    code = patch_hub_main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- pure patch functions


def test_sid_exact_diff():
    patched = ph.patch_config_text(original("SID"), TASKS["SID"])
    assert ph.unified_diff(original("SID"), patched, "s3prl/downstream/voxceleb1/config.yaml") \
        == SID_DIFF


def test_asr_exact_diff_leaves_adjacent_comments_alone():
    patched = ph.patch_config_text(original("ASR"), TASKS["ASR"])
    assert ph.unified_diff(original("ASR"), patched, "s3prl/downstream/asr/config.yaml") \
        == ASR_DIFF


@pytest.mark.parametrize("key", sorted(WARMUP))
def test_only_the_scheduler_block_and_sid_lr_change(key):
    before = original(key).splitlines(keepends=True)
    after = ph.patch_config_text(original(key), TASKS[key]).splitlines(keepends=True)
    assert len(before) == len(after)
    changed = [(old, new) for old, new in zip(before, after) if old != new]
    expected = [("# scheduler:\n", "scheduler:\n"),
                ("#   name: linear_schedule_with_warmup\n", "  name: linear_schedule_with_warmup\n"),
                (f"#   num_warmup_steps: {WARMUP[key]}\n", f"  num_warmup_steps: {WARMUP[key]}\n")]
    if key == "SID":
        expected.insert(0, ("  lr: 1.0e-4\n", "  lr: 1.0e-3\n"))
    assert changed == expected


@pytest.mark.parametrize("key", ["QbE", "SD"])
def test_tasks_without_tweaks_are_unchanged(key):
    assert ph.patch_config_text(original(key), TASKS[key]) == original(key)


def test_patch_refuses_unexpected_text():
    sid, asr = TASKS["SID"], TASKS["ASR"]
    text = original("SID")
    with pytest.raises(ph.PatchError, match="lr is 5.0e-4"):
        ph.patch_config_text(text.replace("lr: 1.0e-4", "lr: 5.0e-4"), sid)
    with pytest.raises(ph.PatchError, match="active 'scheduler:'"):
        ph.patch_config_text(ph.patch_config_text(text, sid), sid)
    extra_key = original("ASR").replace("#   num_warmup_steps: 1400\n",
                                        "#   num_warmup_steps: 1400\n#   last_epoch: 3\n")
    with pytest.raises(ph.PatchError, match="more keys"):
        ph.patch_config_text(extra_key, asr)
    two_blocks = original("ASR") + "# scheduler:\n#   name: x\n#   num_warmup_steps: 1\n"
    with pytest.raises(ph.PatchError, match="found 2"):
        ph.patch_config_text(two_blocks, asr)


def test_crlf_line_endings_are_kept():
    text = original("SID").replace("\n", "\r\n")
    patched = ph.patch_config_text(text, TASKS["SID"])
    assert "scheduler:\r\n  name: linear_schedule_with_warmup\r\n" in patched
    assert "  lr: 1.0e-3\r\n" in patched
    assert patched.replace("\r\n", "\n") == ph.patch_config_text(original("SID"), TASKS["SID"])


def test_hub_block_round_trip_and_families():
    for copy, prefix in ((False, "recycle_distill.upstreams"), (True, "s3prl.upstream")):
        block = ph.hub_block(copy)
        for family in ph.FAMILIES:
            assert f"from {prefix}.{family}.hubconf import *\n" in block
        for text in ("x = 1\n", "x = 1", "x = 1\n\n", ""):
            patched = ph.add_hub_block(text, copy)
            assert patched.endswith(block)
            assert ph.remove_hub_block(patched) in (text, text + "\n")


# ---------------------------------------------------------------- the CLI on a checkout


def test_patch_gives_expected_yaml_values(root, capsys):
    code, out, err = run(capsys, root)
    assert code == 0, err
    assert "Done: 10 item(s) patched" in out  # 9 + the cif_asr shim
    for key, task in TASKS.items():
        before = yaml.safe_load(original(key))
        after = yaml.safe_load(config_path(root, key).read_text())
        if key in WARMUP:
            assert after.pop("scheduler") == {"name": "linear_schedule_with_warmup",
                                              "num_warmup_steps": WARMUP[key]}
        if key == "SID":
            assert isinstance(after["optimizer"]["lr"], float)
            assert after["optimizer"]["lr"] == 0.001
            after["optimizer"]["lr"] = 1.0e-4
        assert after == before, key  # nothing else changed, e.g. PR's specaug stays commented
    for key in ("QbE", "SD"):
        assert config_path(root, key).read_text() == original(key)
    hub = (root / "s3prl" / "hub.py").read_text()
    assert hub == (FIXTURE / "s3prl" / "hub.py").read_text() + "\n" + ph.hub_block(False)


def test_second_run_changes_nothing_and_says_so(root, capsys):
    assert run(capsys, root)[0] == 0
    after_first = snapshot(root)
    code, out, _ = run(capsys, root)
    assert code == 0
    assert "Nothing changed: already patched." in out
    assert out.count("unchanged") == 10  # 9 + the cif_asr shim
    assert snapshot(root) == after_first


def test_dry_run_prints_diff_and_writes_nothing(root, capsys):
    before = snapshot(root)
    code, out, _ = run(capsys, "--dry-run", root)
    assert code == 0
    assert snapshot(root) == before
    assert SID_DIFF in out and ASR_DIFF in out and HUB_DIFF in out
    assert "--- a/s3prl/downstream/sv_voxceleb1/configs/amsoftmax.yaml" in out
    assert "quesst14_dtw" not in out.split("Dry run")[0].split("  skip")[0]
    assert "nothing was written" in out


def test_revert_restores_byte_for_byte(root, capsys):
    sid = config_path(root, "SID")
    sid.chmod(0o640)
    before = snapshot(root)
    assert run(capsys, root)[0] == 0
    assert stat.S_IMODE(sid.stat().st_mode) == 0o640  # atomic write kept the mode
    assert stat.S_IMODE(ph.backup_path(sid).stat().st_mode) == 0o640
    assert list(root.rglob("*.tmp")) == []
    code, out, _ = run(capsys, "--revert", root)
    assert code == 0
    assert "Done: 10 item(s) reverted." in out  # 9 + the cif_asr shim
    assert snapshot(root) == before  # no block, no backups, no manifest, same modes
    assert ph.HUB_BEGIN not in (root / "s3prl" / "hub.py").read_text()
    code, out, _ = run(capsys, "--revert", root)
    assert (code, snapshot(root)) == (0, before)
    assert "Nothing changed: already reverted." in out


def test_revert_dry_run_writes_nothing(root, capsys):
    run(capsys, root)
    patched = snapshot(root)
    code, out, _ = run(capsys, "--revert", "--dry-run", root)
    assert code == 0 and snapshot(root) == patched
    assert "-  lr: 1.0e-3\n+  lr: 1.0e-4\n" in out


def test_symlink_survives(root, capsys):
    link = config_path(root, "ASV")
    target = link.parent / "configs" / "amsoftmax.yaml"
    code, out, _ = run(capsys, root)
    assert code == 0
    assert "sv_voxceleb1/config.yaml -> configs/amsoftmax.yaml" in out
    assert link.is_symlink() and os.readlink(link) == "configs/amsoftmax.yaml"
    assert yaml.safe_load(link.read_text())["scheduler"]["num_warmup_steps"] == 6000
    assert ph.backup_path(target).is_file()
    assert not ph.backup_path(link).exists()
    run(capsys, "--revert", root)
    assert link.is_symlink() and os.readlink(link) == "configs/amsoftmax.yaml"
    assert target.read_text() == original("ASV")


def test_user_edited_config_is_left_alone_with_warning(root, capsys):
    sid = config_path(root, "SID")
    edited = original("SID").replace("lr: 1.0e-4", "lr: 5.0e-4")
    sid.write_text(edited)
    code, out, err = run(capsys, root)
    assert code == 1
    assert "WARNING: s3prl/downstream/voxceleb1/config.yaml: SID: optimizer lr is 5.0e-4, " \
           "expected 1.0e-4; left alone" in err
    assert sid.read_text() == edited
    assert not ph.backup_path(sid).exists()
    assert "scheduler" in yaml.safe_load(config_path(root, "ASR").read_text())  # others done


def test_config_already_tweaked_by_hand_is_accepted(root, capsys):
    asr = config_path(root, "ASR")
    by_hand = ph.patch_config_text(original("ASR"), TASKS["ASR"])
    asr.write_text(by_hand)
    code, out, _ = run(capsys, root)
    assert code == 0
    assert "ASR: already has the tweaks" in out
    assert asr.read_text() == by_hand and not ph.backup_path(asr).exists()


def test_config_edited_after_patching_is_never_clobbered(root, capsys):
    run(capsys, root)
    asr = config_path(root, "ASR")
    edited = asr.read_text().replace("num_warmup_steps: 1400", "num_warmup_steps: 2000")
    asr.write_text(edited)

    code, _, err = run(capsys, root)
    assert code == 1
    assert "ASR: changed since patch_hub.py patched it" in err

    code, _, err = run(capsys, "--revert", root)
    assert code == 1
    assert "s3prl/downstream/asr/config.yaml: ASR: changed since patch_hub.py patched it; " \
           "left alone" in err
    assert asr.read_text() == edited
    assert ph.backup_path(asr).read_text() == original("ASR")  # backup kept for the user
    assert config_path(root, "SID").read_text() == original("SID")  # the rest is reverted
    manifest = json.loads((root / "s3prl" / ph.MANIFEST_NAME).read_text())
    assert manifest["patched"] == ["downstream/asr/config.yaml"]  # what is left to revert


def test_hub_edited_after_patching_loses_only_the_block(root, capsys):
    run(capsys, root)
    hub = root / "s3prl" / "hub.py"
    hub.write_text("# user line\n" + hub.read_text())
    code, _, err = run(capsys, "--revert", root)
    assert code == 1 and "removed only the block" in err
    assert hub.read_text() == "# user line\n" + (FIXTURE / "s3prl" / "hub.py").read_text()
    assert not ph.backup_path(hub).exists()


def test_broken_tree_is_refused(tmp_path, capsys):
    (tmp_path / "s3prl").mkdir()
    (tmp_path / "s3prl" / "hub.py").write_text("")
    code, out, err = run(capsys, tmp_path)
    assert code == 2 and out == ""
    assert "missing s3prl/downstream/ (for a git checkout root)" in err
    assert "missing hub.py and downstream/ (for an installed s3prl package directory)" in err
    code, _, err = run(capsys, tmp_path / "nope")
    assert code == 2 and "does not exist" in err


def test_root_needs_nothing_but_hub_and_downstream(tmp_path, capsys):
    (tmp_path / "s3prl" / "downstream").mkdir(parents=True)
    (tmp_path / "s3prl" / "hub.py").write_text("import os\n")
    code, out, _ = run(capsys, tmp_path)
    assert code == 0 and out.startswith("S3PRL git checkout:")


# ---------------------------------------------------------------- installed package, --copy


def test_installed_package_mode(tmp_path, capsys):
    package = tmp_path / "site-packages" / "s3prl"
    (package / "downstream").mkdir(parents=True)
    (package / "downstream" / "__init__.py").write_text("")
    hub_text = "from s3prl.upstream.apc.hubconf import *\n"
    (package / "hub.py").write_text(hub_text)
    before = snapshot(package)

    code, out, _ = run(capsys, package)
    assert code == 0
    assert out.startswith("installed s3prl package:")
    assert "No downstream configs to patch here" in out
    assert str(ph.default_configs_dir()) in out
    assert (package / "hub.py").read_text() == hub_text + "\n" + ph.hub_block(False)

    assert run(capsys, "--revert", package)[0] == 0
    assert snapshot(package) == before


@pytest.fixture
def fake_upstreams(tmp_path) -> Path:
    """Stand-in upstreams/<family> folders (passed as --upstreams), so --copy does not depend on
    the real hubconfs."""
    folder = tmp_path / "repo_upstreams"
    for family in ph.FAMILIES:
        (folder / family).mkdir(parents=True)
        (folder / family / "__init__.py").write_text("")
        (folder / family / "hubconf.py").write_text(f"def {family}():\n    return '{family}'\n")
        (folder / family / "__pycache__").mkdir()
        (folder / family / "__pycache__" / "hubconf.cpython-311.pyc").write_bytes(b"junk")
    return folder


def test_copy_mode_copies_registers_and_reverts(root, fake_upstreams, capsys):
    before = snapshot(root)
    code, out, _ = run(capsys, "--copy", "--upstreams", fake_upstreams, root)
    assert code == 0
    upstream = root / "s3prl" / "upstream"
    for family in ph.FAMILIES:
        assert (upstream / family / "hubconf.py").read_text() == \
            (fake_upstreams / family / "hubconf.py").read_text()
        assert not (upstream / family / "__pycache__").exists()
        assert f"from s3prl.upstream.{family}.hubconf import *" in \
            (root / "s3prl" / "hub.py").read_text()
    assert "recycle_distill.upstreams" not in (root / "s3prl" / "hub.py").read_text()

    code, out, _ = run(capsys, "--copy", "--upstreams", fake_upstreams, root)
    assert code == 0 and "Nothing changed: already patched." in out

    (upstream / "armhubert" / "__pycache__").mkdir()  # as if S3PRL had imported it
    (upstream / "armhubert" / "__pycache__" / "hubconf.cpython-311.pyc").write_bytes(b"x")
    code, out, _ = run(capsys, "--revert", root)
    assert code == 0
    assert snapshot(root) == before


def test_copy_refreshes_its_own_stale_copy(root, fake_upstreams, capsys):
    assert run(capsys, "--copy", "--upstreams", fake_upstreams, root)[0] == 0
    (fake_upstreams / "starhubert" / "hubconf.py").write_text("def starhubert():\n    pass\n")
    code, out, _ = run(capsys, "--copy", "--upstreams", fake_upstreams, root)
    assert code == 0 and "copy        s3prl/upstream/starhubert" in out
    assert (root / "s3prl" / "upstream" / "starhubert" / "hubconf.py").read_text() == \
        "def starhubert():\n    pass\n"
    assert run(capsys, "--revert", root)[0] == 0
    assert not (root / "s3prl" / "upstream" / "starhubert").exists()


def test_copy_leaves_a_foreign_folder_alone(root, fake_upstreams, capsys):
    foreign = root / "s3prl" / "upstream" / "fithubert"
    foreign.mkdir()
    (foreign / "hubconf.py").write_text("# someone else's\n")
    code, _, err = run(capsys, "--copy", "--upstreams", fake_upstreams, root)
    assert code == 1 and "fithubert: exists and differs" in err
    assert (foreign / "hubconf.py").read_text() == "# someone else's\n"
    run(capsys, "--revert", root)
    assert (foreign / "hubconf.py").read_text() == "# someone else's\n"
    assert not (root / "s3prl" / "upstream" / "armhubert").exists()


def test_switching_modes_needs_a_revert(root, fake_upstreams, capsys):
    assert run(capsys, root)[0] == 0
    hub = (root / "s3prl" / "hub.py").read_bytes()
    code, _, err = run(capsys, "--copy", "--upstreams", fake_upstreams, root)
    assert code == 1 and "Run --revert first" in err
    assert (root / "s3prl" / "hub.py").read_bytes() == hub


def test_copy_refused_without_hubconfs(root, tmp_path, capsys):
    before = snapshot(root)
    code, _, err = run(capsys, "--copy", "--upstreams", tmp_path / "empty", root)
    assert code == 2 and "hubconf.py, which is missing" in err
    assert snapshot(root) == before


# ---------------------------------------------------------------- the real hubconfs


def test_patched_hub_imports_the_real_hubconfs(tmp_path, capsys):
    hubconfs = [REPO / "upstreams" / family / "hubconf.py" for family in ph.FAMILIES]
    missing = [str(path) for path in hubconfs if not path.is_file()]
    assert not missing, f"the repository lacks these hubconfs: {missing}"
    package = tmp_path / "s3prl"
    (package / "downstream").mkdir(parents=True)
    (package / "hub.py").write_text(
        "def options():\n    return [n for n, v in globals().items()"
        " if not n.startswith('_') and callable(v) and n != 'options']\n")
    assert run(capsys, package)[0] == 0
    spec = importlib.util.spec_from_file_location("patched_hub_under_test", package / "hub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = module.options()
    for family in ph.FAMILIES:
        assert any(name.startswith(family) for name in names), (family, names)


# ---------------------------------------------------------------- the cif_asr downstream shim

CIF_EXPERT = "from recycle_distill.downstreams.cif_asr.expert import DownstreamExpert  # noqa: F401\n"


def test_checkout_gets_the_cif_asr_shim_and_revert_removes_it(root, capsys):
    before = snapshot(root)
    code, out, _ = run(capsys, "--dry-run", root)
    assert code == 0 and snapshot(root) == before
    assert "+++ b/s3prl/downstream/cif_asr/expert.py\n" in out and f"+{CIF_EXPERT}" in out
    code, out, _ = run(capsys, root)
    assert code == 0
    shim = root / "s3prl" / "downstream" / "cif_asr"
    assert sorted(path.name for path in shim.iterdir()) == ["__init__.py", "expert.py"]
    assert (shim / "expert.py").read_text() == CIF_EXPERT
    assert "register    s3prl/downstream/cif_asr" in out
    manifest = json.loads((root / "s3prl" / ph.MANIFEST_NAME).read_text())
    assert sorted(manifest["created"]["downstream/cif_asr"]) == ["__init__.py", "expert.py"]
    # S3PRL's import of the expert leaves a __pycache__ behind: revert still removes the folder.
    (shim / "__pycache__").mkdir()
    (shim / "__pycache__" / "expert.cpython-311.pyc").write_bytes(b"compiled")
    code, out, _ = run(capsys, "--revert", root)
    assert code == 0 and "remove      s3prl/downstream/cif_asr" in out
    assert snapshot(root) == before


def test_a_foreign_cif_asr_folder_is_left_alone(root, capsys):
    shim = root / "s3prl" / "downstream" / "cif_asr"
    shim.mkdir()
    (shim / "expert.py").write_text("# someone else's\n")
    code, _, err = run(capsys, root)
    assert code == 1 and "s3prl/downstream/cif_asr: exists and is not patch_hub.py's cif_asr shim" in err
    assert (shim / "expert.py").read_text() == "# someone else's\n"
    run(capsys, "--revert", root)
    assert (shim / "expert.py").read_text() == "# someone else's\n"


def test_an_edited_shim_is_not_removed_by_revert(root, capsys):
    run(capsys, root)
    expert = root / "s3prl" / "downstream" / "cif_asr" / "expert.py"
    expert.write_text(CIF_EXPERT + "# edited\n")
    code, _, err = run(capsys, "--revert", root)
    assert code == 1 and "cif_asr: changed since patch_hub.py created it; left alone" in err
    assert expert.read_text() == CIF_EXPERT + "# edited\n"


def test_installed_package_gets_no_shim_and_a_hint(tmp_path, capsys):
    package = tmp_path / "site-packages" / "s3prl"
    (package / "downstream").mkdir(parents=True)
    (package / "hub.py").write_text("")
    code, out, _ = run(capsys, package)
    assert code == 0 and not (package / "downstream" / "cif_asr").exists()
    assert "run it with: recycle-distill superb -d cif_asr" in out
    assert "created" not in json.loads((package / ph.MANIFEST_NAME).read_text())


def test_cif_asr_yaml_is_not_a_superb_task_config(root, capsys):
    hand_written = b"# CIF-HieraDist\nscheduler:\n  name: x\noptimizer:\n  lr: 1.0e-4\n"
    config = root / "s3prl" / "downstream" / "cif_asr.yaml"
    config.write_bytes(hand_written)
    assert all("cif_asr" not in task.config and "cif_asr" not in task.shipped for task in ph.TASKS)
    run(capsys, root)
    assert config.read_bytes() == hand_written and not ph.backup_path(config).exists()
    run(capsys, "--revert", root)
    assert config.read_bytes() == hand_written


# ---------------------------------------------------------------- one run at a time


def test_a_second_run_says_the_tree_is_busy(root, capsys):
    import fcntl

    before = snapshot(root)
    fd = os.open(root / "s3prl", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a concurrent run holds it
        code = patch_hub_main([str(root)], lock_timeout=0.3)
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert code == ph.EXIT_REFUSED
    assert "waiting for another patch_hub.py run" in err
    assert f"error: {root / 's3prl'} is busy: another patch_hub.py run holds it" in err
    assert snapshot(root) == before


def test_a_second_run_waits_for_the_first(root, capsys):
    import fcntl
    import threading

    fd = os.open(root / "s3prl", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("code", patch_hub_main([str(root)], lock_timeout=30)))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive()  # blocked on the lock
    assert ph.HUB_BEGIN not in (root / "s3prl" / "hub.py").read_text()
    os.close(fd)
    worker.join(30)
    assert result["code"] == 0 and ph.HUB_BEGIN in (root / "s3prl" / "hub.py").read_text()


def test_concurrent_patch_and_revert_never_lose_an_original(root):
    """Patch and revert racing (bug 5): whichever order the lock gives, no config is left
    patched without its backup, and a final revert restores the tree byte for byte."""
    import subprocess
    import sys

    before = snapshot(root)
    script = REPO / "patch_hub.py"
    for _ in range(3):
        runs = [subprocess.Popen([sys.executable, str(script), *args, str(root)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for args in ([], ["--revert"], [], ["--revert"])]
        assert [proc.wait(60) for proc in runs] == [0, 0, 0, 0]
        for key in ("SID", "ASR"):
            path = config_path(root, key).resolve()
            assert path.read_text() == original(key) or ph.backup_path(path).read_text() == original(key)
    subprocess.run([sys.executable, str(script), "--revert", str(root)], check=True, capture_output=True)
    assert snapshot(root) == before


# ---------------------------------------------------------------- preflight


def test_an_unwritable_folder_is_refused_before_anything_is_written(root, capsys, monkeypatch):
    from recycle_distill.s3prl.patch import runs

    blocked = (root / "s3prl" / "downstream" / "asr").resolve()
    real_access = os.access
    monkeypatch.setattr(runs.os, "access",
                        lambda path, mode: False if Path(path) == blocked else real_access(path, mode))
    before = snapshot(root)
    code, _, err = run(capsys, root)
    assert code == ph.EXIT_REFUSED
    assert err.strip() == ("error: cannot write in s3prl/downstream/asr; nothing was changed (fix the permissions "
                           "and run again)")
    assert snapshot(root) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_anything_is_written(root, capsys):
    folder = root / "s3prl" / "downstream" / "emotion"
    before = snapshot(root)
    folder.chmod(0o555)
    try:
        code, _, err = run(capsys, root)
    finally:
        folder.chmod(0o755)
    assert code == ph.EXIT_REFUSED and "cannot write in s3prl/downstream/emotion" in err
    assert snapshot(root) == before


def test_temp_files_of_an_interrupted_run_are_removed_by_the_next(root, capsys):
    before = snapshot(root)
    sid_folder = config_path(root, "SID").parent
    (sid_folder / ".config.yaml.k3j_x9aQ.tmp").write_text("half a config")
    (root / "s3prl" / ".hub.py.ab12CD34.tmp").write_text("half a hub")
    stale_folder = root / "s3prl" / "downstream" / ".cif_asr.Zz00Yy11.tmp"
    stale_folder.mkdir()
    (stale_folder / "expert.py").write_text("half")
    (sid_folder / ".config.yaml.users.tmp").write_text("not ours: another pattern")
    code, out, _ = run(capsys, root)
    assert code == 0
    assert out.count("clean       ") == 3
    assert not (sid_folder / ".config.yaml.k3j_x9aQ.tmp").exists() and not stale_folder.exists()
    assert not (root / "s3prl" / ".hub.py.ab12CD34.tmp").exists()
    assert (sid_folder / ".config.yaml.users.tmp").read_text() == "not ours: another pattern"
    (sid_folder / ".config.yaml.users.tmp").unlink()
    assert run(capsys, "--revert", root)[0] == 0
    assert snapshot(root) == before


def test_data_folders_are_found_in_a_non_editable_install(tmp_path):
    """Issue 11: REPO_DIR = parents[2] pointed outside site-packages in a regular install."""
    import subprocess
    import sys

    site = tmp_path / "site-packages"
    shutil.copytree(REPO / "recycle_distill", site / "recycle_distill",
                    ignore=shutil.ignore_patterns("__pycache__", "downstreams"))
    shutil.copytree(REPO / "upstreams", site / "recycle_distill" / "upstreams",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from recycle_distill.s3prl import patch as p; print(p.default_upstreams_dir()); print(p.default_configs_dir())")
    done = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(site / "recycle_distill" / "upstreams"),
                                        str(site / "recycle_distill" / "s3prl" / "downstream_configs")]


# ---------------------------------------------------------------- issue 20: targets outside the tree


def _move_outside(root: Path, outside: Path, rel: str) -> Path:
    """Replace the tree entry ``rel`` with a symlink to a copy of it in ``outside`` (or to a new
    file or folder there when the entry does not exist); returns the outside path."""
    entry = root / rel
    target = outside / rel.replace("/", "_")
    if entry.is_dir():
        shutil.copytree(entry, target)
        shutil.rmtree(entry)
    elif entry.exists():
        shutil.copy2(entry.resolve(), target)
        entry.unlink()
    elif rel.endswith("cif_asr"):
        target.mkdir()
    else:
        target.write_bytes(b"{}\n" if rel.endswith(".json") else b"someone's file\n")
    entry.symlink_to(target, target_is_directory=target.is_dir())
    return target


@pytest.mark.parametrize("rel, named, leaf", [
    ("s3prl/hub.py", "s3prl/hub.py", ""),
    ("s3prl/downstream/asr/config.yaml", "s3prl/downstream/asr/config.yaml", ""),
    ("s3prl/downstream/voxceleb1", "s3prl/downstream/voxceleb1/config.yaml", "config.yaml"),  # a config's folder
    # the file S3PRL's own in-tree link points to, itself a link leading outside
    ("s3prl/downstream/sv_voxceleb1/configs/amsoftmax.yaml", "s3prl/downstream/sv_voxceleb1/config.yaml", ""),
    ("s3prl/hub.py" + ph.BACKUP_SUFFIX, "s3prl/hub.py" + ph.BACKUP_SUFFIX, ""),
    ("s3prl/downstream/cif_asr", "s3prl/downstream/cif_asr", ""),
    ("s3prl/" + ph.MANIFEST_NAME, "s3prl/" + ph.MANIFEST_NAME, ""),
])
@pytest.mark.parametrize("revert", [False, True])
def test_a_target_leading_outside_the_tree_is_refused_before_any_write(tmp_path, root, capsys, rel, named, leaf,
                                                                        revert):
    """Issue 20, item 5: a symlinked hub.py, task config, config folder, backup, shim or manifest
    that leads outside the tree is refused; nothing outside is modified, no backup lands there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    if revert:
        assert run(capsys, root)[0] == 0
    target = _move_outside(root, outside, rel)
    before, outside_before = snapshot(root), snapshot(outside)
    code, out, err = run(capsys, *(["--revert"] if revert else []), root)
    assert code == ph.EXIT_REFUSED, out + err
    resolved = target.resolve() / leaf if leaf else target.resolve()
    assert err == (f"error: {named} leads outside the S3PRL tree (it resolves to {resolved}); nothing was "
                   f"changed (patch_hub.py writes only inside {root.resolve()})\n")
    assert snapshot(root) == before and snapshot(outside) == outside_before


def test_dry_run_refuses_a_target_outside_the_tree_too(tmp_path, root, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = _move_outside(root, outside, "s3prl/hub.py")
    code, out, err = run(capsys, "--dry-run", root)
    assert code == ph.EXIT_REFUSED and f"(it resolves to {target})" in err and "+++" not in out


def test_an_in_tree_symlink_is_still_followed(root, capsys):
    """The refusal is about where a target leads: S3PRL's own sv_voxceleb1 link stays patchable."""
    code, _, _ = run(capsys, root)
    assert code == 0
    target = root / "s3prl" / "downstream" / "sv_voxceleb1" / "configs" / "amsoftmax.yaml"
    assert ph.backup_path(target).is_file()


# ---------------------------------------------------------------- issue 20: a write failing part way


class FailingWrites:
    """Counts every write-like call (file content, rename/replace, unlink, rmtree); the ``fail_at``-th
    raises OSError(ENOSPC), as a full disk or a read-only mount would."""

    def __init__(self, monkeypatch, fail_at: int | None = None):
        import errno
        import pathlib

        self.calls, self.fail_at = 0, fail_at

        def wrap(owner, name):
            real = getattr(owner, name)

            def counted(*args, **kwargs):
                self.calls += 1
                if self.calls == self.fail_at:
                    raise OSError(errno.ENOSPC, "No space left on device (injected)")
                return real(*args, **kwargs)

            monkeypatch.setattr(owner, name, counted)

        for owner, name in ((pathlib.Path, "write_bytes"), (os, "replace"), (os, "rename"), (os, "unlink"),
                            (os, "remove"), (shutil, "rmtree"), (shutil, "copytree")):
            wrap(owner, name)


def _count_writes(tmp_path, monkeypatch, args) -> int:
    probe = tmp_path / "probe"
    shutil.copytree(FIXTURE, probe, symlinks=True)
    with monkeypatch.context() as patched:
        counter = FailingWrites(patched)
        assert patch_hub_main([*args, str(probe)]) == 0
    return counter.calls


@pytest.mark.parametrize("copy", [False, True])
def test_a_write_failing_part_way_never_leaves_a_tree_revert_cannot_restore(tmp_path, monkeypatch, capsys,
                                                                             fake_upstreams, copy):
    """Issue 20, item 6: for every position of a failing write in a patch run, --revert then gives
    the tree back byte for byte (the cif_asr shim and --copy folders included)."""
    args = ["--copy", "--upstreams", str(fake_upstreams)] if copy else []
    total = _count_writes(tmp_path, monkeypatch, args)
    capsys.readouterr()
    assert total >= 10
    failed = 0
    for fail_at in range(1, total + 1):
        tree = tmp_path / f"tree{fail_at}"
        shutil.copytree(FIXTURE, tree, symlinks=True)
        before = snapshot(tree)
        with monkeypatch.context() as patched:
            FailingWrites(patched, fail_at)
            code = patch_hub_main([*args, str(tree)])
        err = capsys.readouterr().err
        # A failure inside a clean-up that ignores errors (removing a temp folder) lets the run
        # finish; every other one stops it with one line.
        assert code in (ph.EXIT_FAILED, ph.EXIT_OK), (fail_at, err)
        failed += code == ph.EXIT_FAILED
        if code == ph.EXIT_FAILED:
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: could not write "), (fail_at, err)
            assert "No space left on device (injected)" in lines[0]
            assert lines[0].endswith(f"run `python patch_hub.py --revert {tree}` to restore it, "
                                     "or fix the cause and run again"), (fail_at, err)
        code, out, err = run(capsys, "--revert", tree)
        assert code == 0, (fail_at, out, err)
        assert snapshot(tree) == before, fail_at
    assert failed >= total * 3 // 4, (failed, total)


def test_a_refreshed_copy_that_fails_part_way_is_still_reverted(tmp_path, monkeypatch, capsys, fake_upstreams):
    """A --copy run replacing its own stale copy: whichever write fails, revert removes the copy."""
    args = ["--copy", "--upstreams", str(fake_upstreams)]
    probe = tmp_path / "probe"
    shutil.copytree(FIXTURE, probe, symlinks=True)
    assert patch_hub_main([*args, str(probe)]) == 0
    (fake_upstreams / "armhubert" / "extra.py").write_text("# new in this version\n")
    with monkeypatch.context() as patched:
        counter = FailingWrites(patched)
        assert patch_hub_main([*args, str(probe)]) == 0
    capsys.readouterr()
    (fake_upstreams / "armhubert" / "extra.py").unlink()
    for fail_at in range(1, counter.calls + 1):
        tree = tmp_path / f"tree{fail_at}"
        shutil.copytree(FIXTURE, tree, symlinks=True)
        before = snapshot(tree)
        assert patch_hub_main([*args, str(tree)]) == 0
        (fake_upstreams / "armhubert" / "extra.py").write_text("# new in this version\n")
        try:
            with monkeypatch.context() as patched:
                FailingWrites(patched, fail_at)
                assert patch_hub_main([*args, str(tree)]) in (ph.EXIT_FAILED, ph.EXIT_OK)
        finally:
            (fake_upstreams / "armhubert" / "extra.py").unlink()
        capsys.readouterr()
        code, out, err = run(capsys, "--revert", tree)
        assert code == 0, (fail_at, out, err)
        assert snapshot(tree) == before, fail_at


def _chattr(path: Path, flag: str) -> bool:
    import subprocess

    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_an_immutable_config_stops_the_run_and_revert_restores_the_tree(root, capsys):
    """The same with a real failure: ``chattr +i`` on one config (skipped where chattr cannot)."""
    config = config_path(root, "ASR").resolve()
    before = snapshot(root)
    if not _chattr(config, "+i"):
        pytest.skip("chattr +i is not available here (needs root and a file system with attributes)")
    try:
        code, _, err = run(capsys, root)
        assert code == ph.EXIT_FAILED
        assert err.startswith("error: could not write s3prl/downstream/asr/config.yaml (") and err.count("\n") == 1
        code, _, err = run(capsys, "--revert", root)
        assert code == 0, err
    finally:
        _chattr(config, "-i")
    assert snapshot(root) == before


# ---------------------------------------------------------------- issue 20: files that are not UTF-8


@pytest.mark.parametrize("rel, task", [("s3prl/hub.py", ""), ("s3prl/downstream/asr/config.yaml", "ASR: ")])
def test_a_file_that_is_not_utf8_is_named_in_one_line(root, capsys, rel, task):
    """Issue 20, item 17: a non-UTF-8 hub.py or task config is left alone with one warning naming
    it; everything else is patched and reverted as usual."""
    path = root / rel
    data = path.read_bytes() + b"# caf\xe9\n"
    path.write_bytes(data)
    before = snapshot(root)
    code, out, err = run(capsys, root)
    expected = f"WARNING: {rel}: {task}not UTF-8 text (byte 0xe9 at offset {len(data) - 2}); left alone"
    assert code == ph.EXIT_WARNINGS and err.splitlines() == [expected]
    assert path.read_bytes() == data and "Done: 9 item(s) patched." in out
    code, _, err = run(capsys, "--revert", root)
    assert code == ph.EXIT_OK and err == ""  # the file was never patched: nothing to revert in it
    assert snapshot(root) == before


def test_patch_hub_script_names_a_non_utf8_hub_without_a_traceback(root):
    import subprocess
    import sys

    hub = root / "s3prl" / "hub.py"
    hub.write_bytes(b"\xff\xfe" + hub.read_bytes())
    done = subprocess.run([sys.executable, str(REPO / "patch_hub.py"), str(root)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == ph.EXIT_WARNINGS, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == ["WARNING: s3prl/hub.py: not UTF-8 text (byte 0xff at offset 0); left alone"]


@pytest.mark.parametrize("rel", ["s3prl/hub.py" + ph.BACKUP_SUFFIX, "s3prl/" + ph.MANIFEST_NAME])
def test_a_fifo_at_a_target_is_refused_before_any_write(root, capsys, rel):
    """A device-like node where patch_hub.py writes (a backup, the manifest) is refused, not replaced."""
    before = snapshot(root)  # (taken before the FIFO is made: reading one would block)
    os.mkfifo(root / rel)
    code, _, err = run(capsys, root)
    assert code == ph.EXIT_REFUSED
    assert err == f"error: {rel} is a FIFO (named pipe), not a regular file or folder; nothing was changed\n"
    assert stat.S_ISFIFO((root / rel).lstat().st_mode)
    (root / rel).unlink()
    assert snapshot(root) == before
