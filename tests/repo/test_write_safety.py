"""Every writer of the package against the targets a careless or hostile user gives it (issue 20).

The property checked for every writer in every case (stated in docs/bad-input.md, "Writing
outputs"): after a write, either the previous output is intact (the folder holding it hashed
byte for byte before and after: nothing changed, nothing stray left beside it) or the new output
is complete (it loads back). Never neither.

The cases, each run against every writer of the :data:`WRITERS` table:

* a device-like node at the output: a FIFO made in a temporary folder (``os.mkfifo``) and, where
  the test runs as root, a ``/dev/null``-like character device made with ``os.mknod`` in a
  temporary folder (the real ``/dev`` is never touched); directly and through a symlink;
* a folder that is not an export, holding a user's ``config.json``, ``README.md`` and
  ``modeling_*.py`` (and an earlier export the user added a file to);
* a full disk: ``OSError(ENOSPC)`` injected into the writer's data write (runs everywhere), and
  a real small tmpfs mounted in a temporary folder (skipped, with the reason, where mounting is
  not permitted);
* a symlink at the output leading outside the folder given;
* the umask: written files and folders get the mode a plain ``open()``/``mkdir()`` would give.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from recycle_distill.checkpoint import load_student, read_compact, save_compact
from recycle_distill.cli import main as cli_main

from conftest import load_fixture
from helpers.tiny_students import tiny_student

FILE, FOLDER = "file", "folder"


# ----------------------------------------------------------------------------- the writer table
@dataclasses.dataclass
class Sources:
    """Inputs the writers share (built once per module): compact files of the tiny students."""

    folder: Path
    built: dict = dataclasses.field(default_factory=dict)

    def compact(self, family: str) -> Path:
        """A compact file of the tiny ``family`` student (a source the CLI commands read)."""
        path = self.folder / f"{family}.safetensors"
        if not path.exists():
            fixture = load_fixture(f"golden_tiny_{family}.pt")
            save_compact(str(path), fixture["state_dict"], family, fixture["config"])
        return path

    def student(self, family: str) -> torch.nn.Module:
        if family not in self.built:
            self.built[family] = tiny_student(family)
        return self.built[family]


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str = ""  # the refusal or error, without the CLI's "error: " prefix


@dataclasses.dataclass(frozen=True)
class Writer:
    """One way the package writes an output.

    Attributes:
        name: test id.
        output: ``FILE`` or ``FOLDER``, what it makes at its target.
        write: ``write(sources, target, force)`` writes at ``target`` (``force``: the CLI's
            ``--force``; the Python API replaces an earlier output of its own anyway).
        loads: ``loads(target)`` asserts that the output at ``target`` is complete (loads back).
        disk_full: ``disk_full(monkeypatch)`` makes the writer's data write fail as a full disk
            does: part of the data written, then ``OSError(ENOSPC)``.
        needs: modules the writer needs (the case is skipped without them).
        api: True for a Python function (no ``--force``, no "exists" refusal).
    """

    name: str
    output: str
    write: Callable[[Sources, Path, bool], Outcome]
    loads: Callable[[Path], None]
    disk_full: Callable[[pytest.MonkeyPatch], None]
    needs: tuple[str, ...] = ()
    api: bool = False


def _cli(*argv: Any) -> Outcome:
    """Run ``recycle-distill ARGV``: ok, or the one ``error:`` line it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([str(arg) for arg in argv])
    if code == 0:
        return Outcome(True)
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    return Outcome(False, lines[0][len("error: "):])


def _api(call: Callable[[], Any]) -> Outcome:
    try:
        call()
    except Exception as err:  # noqa: BLE001  (any failure: the property is checked on disk)
        return Outcome(False, str(err))
    return Outcome(True)


def _force(force: bool) -> list[str]:
    return ["--force"] if force else []


def _full_disk(path: Any) -> None:
    """What a full disk does to a write (to a path or an open file): part of the data lands, then ENOSPC."""
    if hasattr(path, "write"):
        path.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(path, "name", None))
    with open(path, "wb") as handle:
        handle.write(b"\0" * 4096)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))


def _compact_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from recycle_distill.checkpoint import compact

    monkeypatch.setattr(compact, "save_file", lambda tensors, path, metadata=None: _full_disk(path))


def _hf_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from recycle_distill.hf_export import export

    monkeypatch.setattr(export, "save_file", lambda tensors, path, metadata=None: _full_disk(path))


def _onnx_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from recycle_distill.inference import onnx_export

    monkeypatch.setattr(onnx_export, "_write_metadata", lambda path, metadata: _full_disk(path))


def _torch_save_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "save", lambda payload, path, *args, **kwargs: _full_disk(path))


def _loads_compact(target: Path) -> None:
    _, family, _ = read_compact(str(target))
    load_student(str(target), family)


def _loads_hf(target: Path) -> None:
    assert target.is_dir() and not target.is_symlink()
    load_student(str(target))


def _loads_onnx(target: Path) -> None:
    from recycle_distill.inference.onnx_runtime import OnnxStudentUpstream

    upstream = OnnxStudentUpstream(target)
    features = upstream([torch.zeros(4000)])
    assert torch.isfinite(features["last_hidden_state"]).all()


# The payload of the plain atomic_write case (a megabyte: enough to fill the small disk).
PAYLOAD = bytes(range(256)) * 4096


def _fill(temp_path: str) -> None:
    Path(temp_path).write_bytes(PAYLOAD)


def _atomic_write(sources: Sources, target: Path, force: bool) -> Outcome:
    from recycle_distill.util.atomic import atomic_write

    return _api(lambda: atomic_write(target, lambda temp: _fill(temp)))


def _atomic_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "_fill", _full_disk)


def _loads_payload(target: Path) -> None:
    assert target.read_bytes() == PAYLOAD


def _training_state(sources: Sources, target: Path, force: bool) -> Outcome:
    from recycle_distill.training.state import save_training_state

    state = {"student": sources.student("armhubert").state_dict()}
    return _api(lambda: save_training_state(str(target.parent), 7, state, name=target.name))


def _loads_training_state(target: Path) -> None:
    from recycle_distill.training.state import load_training_state

    assert load_training_state(str(target))["step"] == 7


def _average_checkpoints(sources: Sources, target: Path, force: bool) -> Outcome:
    from helpers.s3prl_checkpoints import write_experiment

    folder = sources.folder / "experiment"
    # Wide enough (about 700 kB) for the small-disk case to run out of room between two outputs.
    paths = sorted(folder.glob("states-*.ckpt")) or write_experiment(folder, steps=(10, 20), width=20000)
    return _cli("average-checkpoints", *paths, "-o", target, *_force(force))


def _loads_average(target: Path) -> None:
    from recycle_distill.checkpoint.safe_load import safe_torch_load
    from recycle_distill.recognizer.average import RECORD

    assert [item["step"] for item in safe_torch_load(target)[RECORD]] == [10, 20]


# The table: one entry per way the package writes an output. Writers added elsewhere join by
# appending entries here; every case below then runs against them too. (The cif-prepare feature
# cache and patch_hub.py's edits of an S3PRL tree edit a folder in place rather than write one
# output: they have their own table, IN_PLACE_WRITERS, at the end of this module.)
WRITERS: list[Writer] = [
    Writer("export-safetensors", FILE,
           lambda s, target, force: _cli("export", s.compact("armhubert"), "-o", target, *_force(force)),
           _loads_compact, _compact_disk_full),
    Writer("export-safetensors-bf16", FILE,
           lambda s, target, force: _cli("export", s.compact("starhubert"), "--dtype", "bf16", "-o", target,
                                         *_force(force)),
           _loads_compact, _compact_disk_full),
    Writer("convert", FILE,
           lambda s, target, force: _cli("convert", s.compact("armhubert"), "-o", target, *_force(force)),
           _loads_compact, _compact_disk_full),
    Writer("export-hf-plain", FOLDER,
           lambda s, target, force: _cli("export", s.compact("maskhubert"), "--format", "hf", "-o", target,
                                         *_force(force)),
           _loads_hf, _hf_disk_full, needs=("transformers",)),
    Writer("export-hf-remote-code", FOLDER,
           lambda s, target, force: _cli("export", s.compact("armhubert"), "--format", "hf", "-o", target,
                                         *_force(force)),
           _loads_hf, _hf_disk_full, needs=("transformers",)),
    Writer("export-onnx", FILE,
           lambda s, target, force: _cli("export", s.compact("starhubert"), "--format", "onnx", "-o", target,
                                         *_force(force)),
           _loads_onnx, _onnx_disk_full, needs=("onnx", "onnxruntime")),
    Writer("export-onnx-int8", FILE,
           lambda s, target, force: _cli("export", s.compact("starhubert"), "--format", "onnx", "--dtype", "int8",
                                         "-o", target, *_force(force)),
           _loads_onnx, _onnx_disk_full, needs=("onnx", "onnxruntime")),
    Writer("save_compact", FILE,
           lambda s, target, force: _api(lambda: save_compact(
               str(target), s.student("armhubert").state_dict(), "armhubert", s.student("armhubert").config.to_dict())),
           _loads_compact, _compact_disk_full, api=True),
    Writer("export_hf", FOLDER,
           lambda s, target, force: _api(lambda: __import__("recycle_distill.hf_export", fromlist=["export_hf"])
                                         .export_hf(s.student("starhubert"), "starhubert", str(target))),
           _loads_hf, _hf_disk_full, needs=("transformers",), api=True),
    Writer("export_onnx", FILE,
           lambda s, target, force: _api(lambda: __import__("recycle_distill.inference.onnx_export",
                                                            fromlist=["export_onnx"])
                                         .export_onnx(s.student("maskhubert"), target, family="maskhubert",
                                                      example_seconds=0.5)),
           _loads_onnx, _onnx_disk_full, needs=("onnx", "onnxruntime"), api=True),
    Writer("atomic_write", FILE, _atomic_write, _loads_payload, _atomic_disk_full, api=True),
    Writer("training-checkpoint", FILE, _training_state, _loads_training_state, _torch_save_disk_full, api=True),
    Writer("average-checkpoints", FILE, _average_checkpoints, _loads_average, _torch_save_disk_full),
]


def _writers(*outputs: str) -> list:
    return [pytest.param(writer, id=writer.name) for writer in WRITERS if not outputs or writer.output in outputs]


# ------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Sources:
    return Sources(tmp_path_factory.mktemp("sources"))


def _needs(writer: Writer) -> None:
    for module in writer.needs:
        pytest.importorskip(module)


def snapshot(path: Path) -> dict:
    """Everything at and under ``path`` (symlinks not followed): mode and content hash (or link
    target, or node type and device number), by path relative to ``path``'s parent."""
    found = {}

    def record(entry: Path) -> None:
        info = entry.lstat()
        if stat.S_ISREG(info.st_mode):
            what: Any = hashlib.sha256(entry.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            what = "-> " + os.readlink(entry)
        else:
            what = (stat.S_IFMT(info.st_mode), info.st_rdev)
        found[str(entry.relative_to(path.parent))] = (stat.S_IMODE(info.st_mode), what)

    record(path)
    if path.is_dir() and not path.is_symlink():
        for root, folders, files in os.walk(path):
            for name in folders + files:
                record(Path(root) / name)
    return found


def old_intact_or_new_complete(writer: Writer, outcome: Outcome, target: Path, before: dict, folder: Path) -> None:
    """The property: a failed write left ``folder`` byte for byte as it was; a write that
    succeeded left a complete output at ``target``."""
    if outcome.ok:
        writer.loads(target)
    else:
        assert snapshot(folder) == before, f"{writer.name} failed ({outcome.message}) and changed {folder}"


def _file_refusal(target: Path, kind: str) -> str:
    return f"{target}: is a {kind}, not a regular file; refusing to write over it"


def _folder_refusal(target: Path, kind: str) -> str:
    return f"{target}: is a {kind}, not a folder; refusing to write over it"


def _refusal(writer: Writer, target: Path, kind: str) -> str:
    return (_folder_refusal if writer.output == FOLDER else _file_refusal)(target, kind)


@pytest.fixture
def fifo_watchdog():
    """Unblocks anything that opens the FIFO (a writer must not): after 60 s it opens the FIFO
    for reading and writing once, so a blocked open returns and the test fails instead of hanging."""
    timers = []

    def watch(path: Path) -> None:
        def release() -> None:
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))

        timer = threading.Timer(60, release)
        timer.daemon = True
        timer.start()
        timers.append(timer)

    yield watch
    for timer in timers:
        timer.cancel()


# ------------------------------------------------------------------------- (a) device-like nodes
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("writer", _writers())
def test_a_fifo_at_the_output_is_refused_and_left_alone(writer, force, sources, tmp_path, fifo_watchdog):
    _needs(writer)
    target = tmp_path / "node"
    os.mkfifo(target)
    fifo_watchdog(target)
    before = snapshot(tmp_path)
    outcome = writer.write(sources, target, force)
    assert not outcome.ok
    assert outcome.message == _refusal(writer, target, "FIFO (named pipe)")
    assert "--force" not in outcome.message
    assert stat.S_ISFIFO(target.lstat().st_mode)
    old_intact_or_new_complete(writer, outcome, target, before, tmp_path)


def _char_device(path: Path) -> None:
    """A /dev/null-like node (major 1, minor 3) made in a temporary folder, or a skip naming why."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as err:
        pytest.skip(f"cannot make a character device in a temporary folder here ({err.strerror}); "
                    f"the FIFO case covers device-like nodes")


@pytest.mark.parametrize("through_link", [False, True], ids=["direct", "symlink"])
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("writer", _writers())
def test_a_character_device_at_the_output_is_refused_and_left_alone(writer, force, through_link, sources, tmp_path):
    _needs(writer)
    devices = tmp_path / "dev"
    devices.mkdir()
    node = devices / "null"
    _char_device(node)
    target = node
    if through_link:
        target = tmp_path / "out"
        target.symlink_to(node)
    before = snapshot(tmp_path)
    outcome = writer.write(sources, target, force)
    assert not outcome.ok
    assert outcome.message == _refusal(writer, target, "character device")
    assert "--force" not in outcome.message
    assert stat.S_ISCHR(node.lstat().st_mode) and node.lstat().st_rdev == os.makedev(1, 3)
    old_intact_or_new_complete(writer, outcome, target, before, tmp_path)


@pytest.mark.parametrize("writer", _writers(FOLDER))
def test_a_regular_file_is_not_replaced_by_a_folder(writer, sources, tmp_path):
    _needs(writer)
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    before = snapshot(tmp_path)
    for force in (False, True):
        outcome = writer.write(sources, target, force)
        assert outcome == Outcome(False, _folder_refusal(target, "regular file"))
        assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ (b) user folders
USER_FILES = {
    "config.json": '{"model_type": "hubert", "hidden_size": 768}\n',
    "README.md": "# my model\n",
    "modeling_mine.py": "class MineModel: ...\n",
    "configuration_mine.py": "class MineConfig: ...\n",
    "notes.txt": "do not lose\n",
}


def _user_folder(folder: Path) -> Path:
    folder.mkdir()
    for name, text in USER_FILES.items():
        (folder / name).write_text(text)
    return folder


USER_LISTING = "README.md, config.json, configuration_mine.py, modeling_mine.py, notes.txt"


def _foreign_refusal(target: Path, names: str) -> str:
    return (f"{target}: not empty and not a recycle-distill export (no config.json with a 'recycle_distill' "
            f"block); it holds {names}; refusing to write into it: choose a new or empty folder")


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("writer", _writers())
def test_a_folder_of_user_files_is_refused_and_untouched(writer, force, sources, tmp_path):
    _needs(writer)
    target = _user_folder(tmp_path / "my-model")
    before = snapshot(tmp_path)
    outcome = writer.write(sources, target, force)
    assert not outcome.ok
    if writer.output == FOLDER:
        expected = _foreign_refusal(target, USER_LISTING)
    else:
        expected = _file_refusal(target, "folder")
    assert outcome.message == expected
    assert "--force" not in outcome.message
    old_intact_or_new_complete(writer, outcome, target, before, tmp_path)


@pytest.mark.parametrize("writer", _writers(FOLDER))
def test_the_listing_of_a_foreign_folder_is_bounded_and_escaped(writer, sources, tmp_path):
    _needs(writer)
    target = tmp_path / "big"
    target.mkdir()
    for number in range(40):
        (target / f"file-{number:02d}.wav").write_bytes(b"")
    before = snapshot(tmp_path)
    outcome = writer.write(sources, target, True)
    names = ", ".join(f"file-{number:02d}.wav" for number in range(8))
    assert outcome == Outcome(False, _foreign_refusal(target, f"{names} and 32 more"))
    old_intact_or_new_complete(writer, outcome, target, before, tmp_path)
    evil = _user_folder(tmp_path / "evil")
    (evil / "x\nERROR: fake.txt").write_bytes(b"")
    before = snapshot(tmp_path)
    outcome = writer.write(sources, evil, True)
    names = "README.md, config.json, configuration_mine.py, modeling_mine.py, notes.txt, 'x\\nERROR: fake.txt'"
    assert outcome == Outcome(False, _foreign_refusal(evil, names))
    old_intact_or_new_complete(writer, outcome, evil, before, tmp_path)


@pytest.mark.parametrize("writer", _writers(FOLDER))
def test_an_export_the_user_added_files_to_is_not_replaced(writer, sources, tmp_path):
    _needs(writer)
    target = tmp_path / "export"
    assert writer.write(sources, target, False).ok
    (target / "notes.txt").write_text("mine\n")
    (target / ".git").mkdir()
    before = snapshot(tmp_path)
    outcome = writer.write(sources, target, True)
    assert outcome == Outcome(False, f"{target}: holds files that an export does not write (.git, notes.txt); "
                                     f"refusing to replace it: move them out or choose another folder")
    old_intact_or_new_complete(writer, outcome, target, before, tmp_path)


@pytest.mark.parametrize("writer", _writers(FOLDER))
def test_an_earlier_export_needs_force_and_is_replaced_whole(writer, sources, tmp_path):
    _needs(writer)
    target = tmp_path / "export"
    assert writer.write(sources, target, False).ok
    before = snapshot(tmp_path)
    if not writer.api:
        assert writer.write(sources, target, False) == Outcome(False, f"{target} exists; pass --force to overwrite it")
        assert snapshot(tmp_path) == before
    outcome = writer.write(sources, target, True)
    assert outcome.ok
    old_intact_or_new_complete(writer, outcome, target, before, tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]  # nothing stray beside it


@pytest.mark.parametrize("writer", _writers(FOLDER))
def test_an_export_into_the_working_directory_keeps_it(writer, sources, tmp_path, monkeypatch):
    _needs(writer)
    target = tmp_path / "export"
    assert writer.write(sources, target, False).ok
    monkeypatch.chdir(target)  # -o . from inside the export: the folder is not renamed from under the shell
    outcome = writer.write(sources, Path("."), True)
    assert outcome.ok, outcome.message
    assert Path(os.getcwd()) == target and target.is_dir()
    writer.loads(target)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]


# --------------------------------------------------------------------------------- (c) full disk
@pytest.mark.parametrize("earlier", [True, False], ids=["replacing", "first-write"])
@pytest.mark.parametrize("writer", _writers())
def test_a_full_disk_keeps_the_previous_output(writer, earlier, sources, tmp_path, monkeypatch):
    _needs(writer)
    target = tmp_path / ("out" if writer.output == FOLDER else "out.bin")
    if earlier:
        assert writer.write(sources, target, False).ok
        writer.loads(target)
    before = snapshot(tmp_path)
    with monkeypatch.context() as patch:
        writer.disk_full(patch)
        outcome = writer.write(sources, target, True)
    assert not outcome.ok and "no space left" in outcome.message.lower()
    old_intact_or_new_complete(writer, outcome, target, before, tmp_path)
    if earlier:
        writer.loads(target)
    outcome = writer.write(sources, target, True)  # the disk has room again: the new output is complete
    assert outcome.ok
    old_intact_or_new_complete(writer, outcome, target, before, tmp_path)


@dataclasses.dataclass
class SmallDisk:
    root: Path

    def used(self) -> int:
        info = os.statvfs(self.root)
        return (info.f_blocks - info.f_bfree) * info.f_frsize

    def resize(self, size: int) -> None:
        size = -(-size // 4096) * 4096
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.root)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs mounted in a temporary folder (resized by the test), or a skip naming why."""
    root = tmp_path / "disk"
    root.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here; the ENOSPC injection covers full disks")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                    f"the ENOSPC injection covers full disks")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", str(root)], capture_output=True)


# Every writer writes inside the small disk; a folder writer also writes to the mount point
# itself (a container's volume: the folder cannot be renamed, its entries are swapped instead).
FULL_DISK_CASES = [pytest.param(writer, "inside", id=f"{writer.name}-inside") for writer in WRITERS] + [
    pytest.param(writer, "mount-point", id=f"{writer.name}-mount-point")
    for writer in WRITERS if writer.output == FOLDER]


@pytest.mark.parametrize("writer, where", FULL_DISK_CASES)
def test_a_really_full_disk_keeps_the_previous_output(writer, where, sources, small_disk):
    _needs(writer)
    root = small_disk.root
    target = root if where == "mount-point" else root / ("out" if writer.output == FOLDER else "out.bin")
    assert writer.write(sources, target, False).ok
    writer.loads(target)
    used = small_disk.used()
    # Room for half another output: writing the new one beside the old one runs out of space.
    small_disk.resize(used + used // 2)
    before = snapshot(root)
    outcome = writer.write(sources, target, True)
    assert not outcome.ok
    old_intact_or_new_complete(writer, outcome, target, before, root)
    assert small_disk.used() == used  # no partial temporary file left taking space
    small_disk.resize(64 << 20)
    outcome = writer.write(sources, target, True)
    assert outcome.ok
    old_intact_or_new_complete(writer, outcome, target, before, root)
    assert not [path.name for path in root.iterdir() if path.name.startswith(".")]  # nothing stray
    if where == "inside":
        assert [path.name for path in root.iterdir()] == [target.name]


# ----------------------------------------------------------------------- (d) symlinks out of it
@pytest.mark.parametrize("writer", _writers())
def test_a_symlink_leading_outside_is_replaced_never_written_through(writer, sources, tmp_path):
    _needs(writer)
    given, outside = tmp_path / "given", tmp_path / "outside"
    given.mkdir()
    outside.mkdir()
    real = outside / ("export" if writer.output == FOLDER else "model.bin")
    assert writer.write(sources, real, False).ok
    target = given / ("out" if writer.output == FOLDER else "out.bin")
    target.symlink_to(real)
    before = snapshot(outside)
    outcome = writer.write(sources, target, True)
    assert outcome.ok, outcome.message
    assert snapshot(outside) == before  # what the link led to is untouched
    assert not target.is_symlink()
    writer.loads(target)
    assert sorted(path.name for path in given.iterdir()) == [target.name]


@pytest.mark.parametrize("writer", _writers(FOLDER))
def test_a_symlink_to_a_user_folder_outside_is_refused(writer, sources, tmp_path):
    _needs(writer)
    real = _user_folder(tmp_path / "outside")
    target = tmp_path / "out"
    target.symlink_to(real)
    before = snapshot(tmp_path)
    outcome = writer.write(sources, target, True)
    names = "README.md, config.json, configuration_mine.py, modeling_mine.py, notes.txt"
    assert outcome == Outcome(False, _foreign_refusal(target, names))
    old_intact_or_new_complete(writer, outcome, target, before, tmp_path)


# ------------------------------------------------------------------------------------- umask
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
@pytest.mark.parametrize("writer", _writers())
def test_outputs_follow_the_umask(writer, umask, sources, tmp_path):
    _needs(writer)
    target = tmp_path / ("out" if writer.output == FOLDER else "out.bin")
    previous = os.umask(umask)
    try:
        assert writer.write(sources, target, False).ok
    finally:
        os.umask(previous)
    modes = {}
    for entry in [target, *(target.rglob("*") if target.is_dir() else [])]:
        modes[str(entry.relative_to(tmp_path))] = oct(stat.S_IMODE(entry.stat().st_mode))
    expected = {name: oct((0o777 if (tmp_path / name).is_dir() else 0o666) & ~umask) for name in modes}
    assert modes == expected


def _scan_and_build(folder: Path) -> None:
    """The package's caches: a scanned folder's manifest, a CIF feature cache's shards."""
    import soundfile

    from recycle_distill.downstreams.cif_asr.feature_cache import build_cache
    from recycle_distill.training.data.scan import scan_folder

    audio = folder / "audio"
    audio.mkdir()
    soundfile.write(audio / "a.wav", (torch.randn(3200) * 0.1).numpy(), 16000)
    scan_folder(audio, cache_dir=folder / "manifest-cache", progress=False)

    class Teacher:  # what build_cache asks of a language-model teacher, without a model
        fingerprint, hidden_size = "f" * 64, 4

        def vectors(self, seqs, names=None, batch_size=64):
            return [torch.ones(len(ids) + 1, 4) for ids in seqs]

    build_cache(folder / "feature-cache", [("utt0", [5, 6]), ("utt1", [7])], Teacher(), progress=False)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_cache_shards_and_manifests_follow_the_umask(umask, tmp_path):
    previous = os.umask(umask)
    try:
        _scan_and_build(tmp_path)
    finally:
        os.umask(previous)
    written = [path for path in tmp_path.rglob("*") if path.is_file() and "audio" not in path.parts]
    assert {path.suffix for path in written} >= {".tsv", ".safetensors", ".json"}
    modes = {str(path.relative_to(tmp_path)): oct(stat.S_IMODE(path.stat().st_mode)) for path in written}
    assert modes == {name: oct(0o666 & ~umask) for name in modes}


# ----------------------------------------------------------------- the folder swap, step by step
@pytest.mark.parametrize("in_place", [False, True], ids=["beside", "mount-point"])
def test_a_failed_swap_puts_the_old_folder_back(in_place, tmp_path, monkeypatch):
    from recycle_distill.util import atomic

    target = tmp_path / "out"
    target.mkdir()
    (target / "weights").write_bytes(b"old weights")
    (target / "card").write_text("old card")
    before = snapshot(tmp_path)
    if in_place:  # as if ``out`` were a mount point: the new entries are built inside and swapped one by one
        monkeypatch.setattr(atomic.os.path, "ismount", lambda path: os.fspath(path) == str(target))
    renames = []
    real_rename = os.rename
    failing = str(target if not in_place else target / "weights")  # the new output going in

    def rename(source, destination):
        renames.append(os.fspath(destination))
        if renames.count(failing) == 1 and renames[-1] == failing:  # once: putting the old one back works
            raise OSError(errno.EIO, "Input/output error", failing)
        real_rename(source, destination)

    monkeypatch.setattr(atomic.os, "rename", rename)

    def write(folder):
        Path(folder, "weights").write_bytes(b"new weights")
        Path(folder, "card").write_text("new card")

    with pytest.raises(OSError, match="Input/output error"):
        atomic.atomic_write_folder(target, write)
    assert renames  # the swap was reached
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    atomic.atomic_write_folder(target, write)
    assert (target / "weights").read_bytes() == b"new weights" and sorted(os.listdir(tmp_path)) == ["out"]


# ------------------------------------------------------------ writers that edit a folder in place
# ``cif-prepare --cache`` (the CIF feature cache) and ``patch_hub.py`` (patch and revert) do not
# write one output that they may replace whole: they add to, and edit, a folder the user owns (a
# cache folder that may also hold the user's notes, an S3PRL checkout). A folder of user files is
# where they are meant to write, so the export cases above do not fit them; they have this table
# of their own, run against the same four kinds of target with the property stated for them:
#
#   a target that is a device or FIFO, a folder that is not theirs, or a link leading out of the
#   folder is refused and left byte for byte as it was; a write that fails part way (a full disk)
#   leaves the folder as it was (the cache), or one that ``--revert`` gives back byte for byte
#   (patch_hub.py); with room again, the same command completes the new output.
@dataclasses.dataclass(frozen=True)
class InPlaceWriter:
    """One writer that edits a folder in place.

    Attributes:
        name: test id.
        make: ``make(folder)`` creates its folder at ``folder`` in a first, complete state.
        write: ``write(folder)`` runs it (the cache: add utterances; patch_hub.py: patch).
        complete: ``complete(folder)`` asserts the new output is complete.
        recover: ``recover(folder)``: what the user runs after a failure to get the folder back
            (``--revert``; nothing for the cache), then byte for byte as before.
        inner: a path in the folder it writes (a FIFO is put there).
        foreign: ``foreign(folder)`` makes a folder of someone else's at ``folder``.
        link: a path in the folder it reads and writes (replaced by a link leading outside).
        disk_full: ``disk_full(monkeypatch)``: its next data write fails as a full disk does.
        spare: pages left free on the small disk for the write that must run out of space.
        reference: ``reference(folder)`` makes the state ``recover`` returns to (default: the
            folder as it was before the write).
    """

    name: str
    make: Callable[[Path], Any]
    write: Callable[[Path], Outcome]
    complete: Callable[[Path], None]
    recover: Callable[[Path], None]
    inner: str
    foreign: Callable[[Path], Any]
    link: str
    disk_full: Callable[[pytest.MonkeyPatch], None]
    spare: int = 3
    reference: Callable[[Path], Any] | None = None


class _CacheTeacher:
    """What ``build_cache`` asks of a language-model teacher, without a model."""

    fingerprint, hidden_size = "c" * 64, 8

    def vectors(self, seqs, names=None, batch_size=64):
        return [torch.full((len(ids) + 1, 8), 0.5) for ids in seqs]


def _cache_items(count: int) -> list:
    return [(f"utt{number:05d}", [5 + number % 7] * (1 + number % 5)) for number in range(count)]


def _cache_build(folder: Path, count: int) -> Outcome:
    from recycle_distill.downstreams.cif_asr.feature_cache import build_cache

    return _api(lambda: build_cache(folder, _cache_items(count), _CacheTeacher(), shard_size=100000, progress=False))


def _cache_make(folder: Path) -> None:
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's, kept\n")
    assert _cache_build(folder, 4).ok


def _cache_complete(folder: Path, count: int = 6) -> None:
    from recycle_distill.downstreams.cif_asr.feature_cache import FeatureCache

    cache = FeatureCache.open(folder, _CacheTeacher.fingerprint)
    assert cache.ids == [utt for utt, _ in _cache_items(count)]
    assert all(cache.get(utt).shape[1] == 8 for utt in cache.ids)
    assert (folder / "notes.txt").read_text() == "the user's, kept\n"


def _cache_foreign(folder: Path) -> None:
    _user_folder(folder)
    (folder / "index.json").write_text('{"pages": 3}\n')
    (folder / "shard-00000.safetensors").write_bytes(b"the user's own shard")


def _cache_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch  # build_cache imports save_file from here when it runs

    monkeypatch.setattr(safetensors.torch, "save_file", lambda tensors, path, metadata=None: _full_disk(path))


S3PRL_TREE = Path(__file__).resolve().parents[1] / "data" / "s3prl_tree"


def _patch_hub(*argv: Any) -> Outcome:
    from recycle_distill.cli.patch_hub import main as patch_hub_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = patch_hub_main([str(arg) for arg in argv])
    if code == 0:
        return Outcome(True)
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    return Outcome(False, lines[0][len("error: "):])


def _tree_complete(folder: Path) -> None:
    from recycle_distill.s3prl.patch import HUB_BEGIN, MANIFEST_NAME

    assert HUB_BEGIN in (folder / "s3prl" / "hub.py").read_text()
    assert (folder / "s3prl" / MANIFEST_NAME).is_file() and (folder / "s3prl" / "downstream" / "cif_asr").is_dir()


def _tree_revert(folder: Path) -> None:
    assert _patch_hub("--revert", folder).ok


def _tree_reverted(folder: Path) -> None:
    from recycle_distill.s3prl.patch import HUB_BEGIN, MANIFEST_NAME

    assert HUB_BEGIN not in (folder / "s3prl" / "hub.py").read_text()
    assert not (folder / "s3prl" / MANIFEST_NAME).exists() and not (folder / "s3prl" / "downstream" / "cif_asr").exists()


def _tree_copy(folder: Path) -> None:
    shutil.copytree(S3PRL_TREE, folder, symlinks=True)


def _tree_patched(folder: Path) -> None:
    _tree_copy(folder)
    assert _patch_hub(folder).ok


def _tree_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """The third file patch_hub.py writes fails as a full disk does (a part lands, then ENOSPC)."""
    real = Path.write_bytes
    calls = [0]

    def write_bytes(path, data):
        calls[0] += 1
        if calls[0] == 3:
            _full_disk(path)
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


IN_PLACE_WRITERS: list[InPlaceWriter] = [
    InPlaceWriter("cif-prepare-cache", _cache_make, lambda folder: _cache_build(folder, 6), _cache_complete,
                  lambda folder: None, "index.json", _cache_foreign, "shard-00000.safetensors", _cache_disk_full),
    InPlaceWriter("patch_hub", _tree_copy, lambda folder: _patch_hub(folder), _tree_complete, _tree_revert,
                  "s3prl/hub.py.recycle-distill.orig", _user_folder, "s3prl/hub.py", _tree_disk_full),
    InPlaceWriter("patch_hub-revert", _tree_patched, lambda folder: _patch_hub("--revert", folder), _tree_reverted,
                  _tree_revert, "s3prl/downstream/asr/config.yaml.recycle-distill.orig", _user_folder,
                  "s3prl/downstream/asr/config.yaml", _tree_disk_full, spare=0, reference=_tree_copy),
]


def _in_place(*names: str) -> list:
    return [pytest.param(writer, id=writer.name) for writer in IN_PLACE_WRITERS if not names or writer.name in names]


@pytest.mark.parametrize("writer", _in_place())
def test_in_place_a_device_like_node_is_refused(writer, tmp_path, fifo_watchdog):
    folder = tmp_path / "folder"
    writer.make(folder)
    node = folder / writer.inner
    if node.exists():
        node.unlink()
    os.mkfifo(node)
    fifo_watchdog(node)
    before = snapshot(tmp_path)
    outcome = writer.write(folder)
    assert not outcome.ok and "\n" not in outcome.message
    assert snapshot(tmp_path) == before
    at = tmp_path / "node"
    os.mkfifo(at)
    fifo_watchdog(at)
    before = snapshot(tmp_path)
    assert not writer.write(at).ok
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("writer", _in_place())
def test_in_place_a_folder_that_is_not_theirs_is_refused_and_untouched(writer, tmp_path):
    folder = tmp_path / "theirs"
    writer.foreign(folder)
    before = snapshot(tmp_path)
    outcome = writer.write(folder)
    assert not outcome.ok and "\n" not in outcome.message and str(folder) in outcome.message
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("writer", _in_place())
def test_in_place_a_link_leading_outside_is_refused_never_written_through(writer, tmp_path):
    folder, outside = tmp_path / "folder", tmp_path / "outside"
    writer.make(folder)
    outside.mkdir()
    entry = folder / writer.link
    real = outside / entry.name
    shutil.copy2(entry, real)
    entry.unlink()
    entry.symlink_to(real)
    before = snapshot(tmp_path)
    outcome = writer.write(folder)
    assert not outcome.ok and "leads outside" in outcome.message, outcome
    assert snapshot(tmp_path) == before


def _reference(writer: InPlaceWriter, folder: Path, before: dict, scratch: Path) -> dict:
    """What ``folder`` must hold after a failed write and ``writer.recover``."""
    if writer.reference is None:
        return before
    scratch.mkdir()
    writer.reference(scratch / folder.name)
    return snapshot(scratch / folder.name)


@pytest.mark.parametrize("writer", _in_place())
def test_in_place_a_full_disk_leaves_the_folder_as_it_was_or_revertible(writer, tmp_path, monkeypatch):
    folder = tmp_path / "folder"
    writer.make(folder)
    before = snapshot(folder)
    with monkeypatch.context() as patch:
        writer.disk_full(patch)
        outcome = writer.write(folder)
    assert not outcome.ok and "no space left" in outcome.message.lower(), outcome
    assert "\n" not in outcome.message
    writer.recover(folder)
    assert snapshot(folder) == _reference(writer, folder, before, tmp_path / "reference")
    assert writer.write(folder).ok  # room again: the same command completes the new output
    writer.complete(folder)


@pytest.mark.parametrize("writer", _in_place())
def test_in_place_a_really_full_disk_leaves_the_folder_as_it_was_or_revertible(writer, small_disk, tmp_path):
    folder = small_disk.root / "folder"
    writer.make(folder)
    used = small_disk.used()
    small_disk.resize(used + writer.spare * 4096)  # the run stops part way
    before = snapshot(folder)
    if writer.name == "cif-prepare-cache":
        outcome = _cache_build(folder, 6000)  # a shard far bigger than the room left
    else:
        outcome = writer.write(folder)
    assert not outcome.ok, writer.name
    small_disk.resize(64 << 20)
    writer.recover(folder)
    assert snapshot(folder) == _reference(writer, folder, before, tmp_path / "reference")
    if writer.reference is None:
        assert small_disk.used() == used  # nothing stray left taking space
    assert writer.write(folder).ok
    writer.complete(folder)
