"""The safe unpickler (``checkpoint/safe_load.py``) beyond ``test_checkpoint.py``: the inert
stand-ins built for allow-listed classes, a caller's own allow-list, legacy (non-zip) files,
``map_location``, and the exact one-line message of each way a load can fail.

Written for the survivors of mutation testing (docs/development.md, Mutation testing).
"""

from __future__ import annotations

import os
import pickle
import sys
import types

import pytest
import torch

from recycle_distill.checkpoint import safe_load
from recycle_distill.checkpoint.safe_load import (CheckpointError, KNOWN_GLOBALS, PickledState, safe_torch_load,
                                                  stand_in)
from recycle_distill.util.messages import plain


class _Thing:
    """Pickled as ``h8fake.mod.Thing`` (a module that exists only while the file is written)."""

    def __init__(self, state):
        self.payload = state

    def __getstate__(self):
        return self.payload


@pytest.fixture
def thing_file(tmp_path, monkeypatch):
    """Write a checkpoint holding one ``h8fake.mod.Thing`` whose pickled state is the given value."""

    def write(state, name="thing.pt"):
        module = types.ModuleType("h8fake.mod")
        module.Thing = _Thing
        _Thing.__module__, _Thing.__qualname__ = "h8fake.mod", "Thing"
        monkeypatch.setitem(sys.modules, "h8fake", types.ModuleType("h8fake"))
        monkeypatch.setitem(sys.modules, "h8fake.mod", module)
        path = tmp_path / name
        torch.save({"obj": _Thing(state)}, path)
        monkeypatch.delitem(sys.modules, "h8fake.mod")
        return path

    return write


def test_a_stand_in_class_is_named_after_the_pickled_class():
    cls = stand_in("a.b.Dictionary")
    assert cls.__name__ == "Dictionary" and cls.pickled_name == "a.b.Dictionary"
    assert issubclass(cls, PickledState) and cls is not stand_in("a.b.Dictionary")


def test_a_callers_allow_list_replaces_the_default_one(thing_file):
    path = thing_file({"symbols": ["a", "b"]})
    with pytest.raises(CheckpointError, match="which is not on the allow-list"):
        safe_torch_load(path)
    obj = safe_torch_load(path, allowed={"h8fake.mod.Thing": stand_in("h8fake.mod.Thing")})["obj"]
    assert obj.symbols == ["a", "b"] and obj.state == {"symbols": ["a", "b"]}
    assert repr(obj) == "<h8fake.mod.Thing (inert stand-in) {'symbols': ['a', 'b']}>"
    with pytest.raises(AttributeError, match="^h8fake.mod.Thing stand-in has no field 'count'$"):
        obj.count


def test_a_stand_in_keeps_a_state_that_is_not_a_dict_under_state(thing_file):
    obj = safe_torch_load(thing_file([1, 2]), allowed={"h8fake.mod.Thing": stand_in("h8fake.mod.Thing")})["obj"]
    assert obj.state == {"state": [1, 2]} and obj.__getattr__("state") == [1, 2]
    with pytest.raises(AttributeError, match="stand-in has no field 'symbols'"):
        obj.symbols


def test_a_stand_in_without_state_has_no_fields():
    obj = object.__new__(stand_in("x.Y"))  # no __new__: neither args nor state were set
    with pytest.raises(AttributeError, match="^x.Y stand-in has no field 'a'$"):
        obj.a
    assert repr(obj) == "<x.Y (inert stand-in) None>"


def test_the_default_allow_list_has_the_known_globals():
    assert KNOWN_GLOBALS["fairseq.data.dictionary.Dictionary"].pickled_name == "fairseq.data.dictionary.Dictionary"


def test_a_legacy_pickle_file_loads(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    assert torch.equal(safe_torch_load(path)["w"], torch.ones(2))


def test_map_location_is_passed_on(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert safe_torch_load(path, map_location="meta")["w"].device.type == "meta"


def test_a_file_without_a_torch_header_is_one_line(tmp_path):
    path = tmp_path / "text.pt"
    path.write_bytes(b"hello world")
    with pytest.raises(CheckpointError) as caught:
        safe_torch_load(path)
    assert str(caught.value) == (f"{path}: truncated or corrupt checkpoint (not a torch checkpoint: no zip or pickle "
                                 "header)")


def _fail_with(monkeypatch, tmp_path, error: BaseException) -> str:
    """The message of loading a valid file while torch.load raises ``error``."""
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(1)}, path)

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", broken)
    with pytest.raises(CheckpointError) as caught:
        safe_torch_load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: "):]


@pytest.mark.parametrize("text, shown", [
    ("Weights only load failed.\n WeightsUnpickler error: Unsupported operand 7\n\nmore", "Unsupported operand 7"),
    ("Weights only load failed.\n\n  the second line\nthird", "the second line"),
    ("first\nsecond\nthird", "second"),
    ("WeightsUnpickler error: A WeightsUnpickler error: B", "A WeightsUnpickler error: B"),
    ("just one line", "just one line"),
    ("WeightsUnpickler error: ", "unpickling failed"),
    ("WeightsUnpickler error: " + "x" * 300, plain("x" * 300, 200)),
])
def test_other_unpickling_errors_show_their_detail(monkeypatch, tmp_path, text, shown):
    assert _fail_with(monkeypatch, tmp_path, pickle.UnpicklingError(text)) == f"refused to load: {shown}"


def test_a_refused_global_is_named(monkeypatch, tmp_path):
    error = pickle.UnpicklingError("Weights only load failed.\nUnsupported global: GLOBAL evil.mod.Run was not allowed")
    assert _fail_with(monkeypatch, tmp_path, error) == (
        "refused to load: the pickle asks for 'evil.mod.Run', which is not on the allow-list of data-only classes "
        "(loading it could run arbitrary code)")


def test_the_older_refusal_wording_is_understood():
    assert safe_load._refused_global("x unsupported GLOBAL a.b.C here") == "a.b.C"
    assert safe_load._refused_global("unsupported GLOBAL a.B, then unsupported GLOBAL c.D") == "a.B,"
    assert safe_load._refused_global("nothing refused") is None


def test_running_out_of_memory_is_one_line(monkeypatch, tmp_path):
    assert _fail_with(monkeypatch, tmp_path, MemoryError()) == (
        "refused to load: it asks for more memory than is available")


@pytest.mark.parametrize("error, shown", [(OSError("disk gone\nsecond line"), "disk gone"), (KeyError(), "KeyError"),
                                          (ValueError("y" * 300), plain("y" * 300, 200))])
def test_any_other_error_is_a_corrupt_checkpoint(monkeypatch, tmp_path, error, shown):
    assert _fail_with(monkeypatch, tmp_path, error) == f"truncated or corrupt checkpoint ({shown})"


def test_an_unreadable_zip_directory_is_a_corrupt_checkpoint(monkeypatch, tmp_path):
    def broken(path):
        raise ValueError("bad central directory\nat offset 12")

    monkeypatch.setattr(safe_load, "check_storage_records", broken)
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(CheckpointError) as caught:
        safe_torch_load(path)
    assert str(caught.value) == f"{path}: truncated or corrupt checkpoint (bad central directory)"


def test_a_storage_problem_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(safe_load, "check_storage_records", lambda path: "record 'w/data/0' is missing")
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(CheckpointError) as caught:
        safe_torch_load(path)
    assert str(caught.value) == f"{path}: truncated or corrupt checkpoint: record 'w/data/0' is missing"


def test_a_folder_or_a_fifo_is_no_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError) as caught:
        safe_torch_load(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory, not a checkpoint file"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError) as caught:
        safe_torch_load(fifo)
    assert str(caught.value) == f"{fifo}: not a regular file"
