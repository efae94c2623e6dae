"""``patch_hub --revert`` leaves no backup behind, whatever state each patched file is in.

``test_patch_hub.py`` reverts a tree exactly as the patch left it. Here files are first put back
to their originals by hand (a ``git checkout`` of one config, of all of them, of the hub), which
takes another branch of the revert ("already original"): the whole tree must still come back
byte for byte, modes included, with no ``*.recycle-distill.orig`` left."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from recycle_distill.cli.patch_hub import main as patch_hub_main
from recycle_distill.s3prl import patch as ph

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "s3prl_tree"
BACKUP = "*" + ph.backup_path(Path("x")).name[1:]  # *.recycle-distill.orig


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: symlink target, or file bytes and mode, or 'dir'."""
    out = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[relative] = ("link", os.readlink(path))
        elif path.is_dir():
            out[relative] = ("dir",)
        else:
            out[relative] = ("file", path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


def patch_hub(capsys, *args) -> int:
    code = patch_hub_main([str(arg) for arg in args])
    capsys.readouterr()
    return code


@pytest.mark.parametrize("restored", ["one config", "every config", "the hub", "everything"])
def test_revert_after_files_were_restored_by_hand_leaves_no_backup(tmp_path, capsys, restored):
    root = tmp_path / "s3prl_checkout"
    shutil.copytree(FIXTURE, root, symlinks=True)
    before = snapshot(root)
    assert patch_hub(capsys, root) == 0
    backups = sorted(root.rglob(BACKUP))
    configs = [backup for backup in backups if backup.name.startswith("config")]
    hub = [backup for backup in backups if backup.name.startswith("hub.py")]
    assert len(configs) >= 2 and len(hub) == 1
    chosen = {"one config": configs[:1], "every config": configs, "the hub": hub, "everything": backups}[restored]
    for backup in chosen:  # the file its backup belongs to, back to the original bytes
        Path(str(backup)[: -len(BACKUP) + 1]).write_bytes(backup.read_bytes())
    assert patch_hub(capsys, "--revert", root) == 0
    assert sorted(root.rglob(BACKUP)) == []
    assert snapshot(root) == before
    assert patch_hub(capsys, "--revert", root) == 0 and snapshot(root) == before
