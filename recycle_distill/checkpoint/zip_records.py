"""Check a torch zip checkpoint's storage records against the sizes its pickle declares.

torch's loader reads ``numel * itemsize`` bytes for each storage from the zip record
``<archive>/data/<key>`` without comparing that with the record's size, so a record shorter
than its storage makes the tensor hold whatever memory follows it (or crash the process).
The pickle is read here with :mod:`pickletools`, which only decodes opcodes and never builds
or imports anything: a small stack machine follows just enough of it to see the persistent
ids ``('storage', <dtype class>, key, location, numel)`` that torch writes for storages.
"""

from __future__ import annotations

import pickletools
import warnings
import zipfile
from typing import Any, Optional

import torch

from recycle_distill.util.messages import short_repr

__all__ = ["declared_storage_sizes", "check_storage_records"]

# A data.pkl larger than this is not a checkpoint we write or read (it is only the
# structure; tensors live in their own records).
MAX_PICKLE_BYTES = 256 * 2**20

_MARK = object()  # the pickle MARK on our symbolic stack
_OPAQUE = object()  # any value this reader does not need to know


class _Global(tuple):
    """(module, name) of a GLOBAL / STACK_GLOBAL opcode."""


def _itemsize(storage_class: Any) -> Optional[int]:
    """Bytes per element of a torch storage class named in the pickle, None if unknown."""
    if not isinstance(storage_class, _Global) or storage_class[0] != "torch":
        return None
    name = storage_class[1]
    if name == "UntypedStorage":
        return 1
    if not name.endswith("Storage") or name.startswith("_"):
        return None
    with warnings.catch_warnings():  # the legacy typed-storage classes warn when touched
        warnings.simplefilter("ignore")
        cls = getattr(torch, name, None)
        dtype = getattr(cls, "dtype", None)
    return dtype.itemsize if isinstance(dtype, torch.dtype) else None


def _pop_to_mark(stack: list) -> list:
    items = []
    while True:
        item = stack.pop()
        if item is _MARK:
            items.reverse()
            return items
        items.append(item)


def declared_storage_sizes(pickle_bytes: bytes) -> dict[str, int]:
    """storage key -> bytes declared for it, read from a torch ``data.pkl`` without running it.

    Raises ValueError (bad opcodes) or IndexError (an inconsistent stack) on malformed data.
    """
    stack: list = []
    memo: dict[int, Any] = {}
    sizes: dict[str, int] = {}
    for opcode, arg, _ in pickletools.genops(pickle_bytes):
        name = opcode.name
        if name == "MARK":
            stack.append(_MARK)
        elif name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BININT", "BININT1",
                      "BININT2", "LONG1", "LONG4", "INT", "LONG", "SHORT_BINSTRING", "BINSTRING", "STRING"):
            stack.append(arg)
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(_Global((module, attr)))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(_Global((module, attr)))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(int(arg), _OPAQUE))
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            items = stack[-count:]
            del stack[-count:]
            stack.append(tuple(items))
        elif name == "TUPLE":
            stack.append(tuple(_pop_to_mark(stack)))
        elif name == "BINPERSID":
            _record_storage(stack.pop(), sizes)
            stack.append(_OPAQUE)
        elif name == "STOP":
            break
        else:
            _generic(opcode, stack)
    return sizes


def _record_storage(pid: Any, sizes: dict[str, int]) -> None:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
        return
    itemsize = _itemsize(pid[1])
    key, numel = pid[2], pid[4]
    if itemsize is None or not isinstance(key, str) or not isinstance(numel, int):
        return
    sizes[key] = max(sizes.get(key, 0), numel * itemsize)


def _generic(opcode: Any, stack: list) -> None:
    """Apply an opcode's stack effect with opaque values (its meaning does not matter here)."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        _pop_to_mark(stack)
        count = before.index(pickletools.markobject)
    else:
        count = len(before)
    if count:
        if count > len(stack):
            raise IndexError("pickle stack underflow")
        del stack[-count:]
    stack.extend(_OPAQUE for _ in opcode.stack_after)


def check_storage_records(path: str) -> Optional[str]:
    """None if every storage record of the zip checkpoint ``path`` holds its declared bytes.

    Otherwise a sentence naming the first bad record. Files that are not torch zip
    checkpoints return None (torch's loader reports those).
    """
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        pickles = [name for name in infos if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            return None
        prefix = pickles[0][: -len("data.pkl")]
        info = infos[pickles[0]]
        if info.file_size > MAX_PICKLE_BYTES:
            return (f"record {short_repr(pickles[0], 200)} is {info.file_size} bytes, more than a checkpoint's "
                    f"structure needs")
        declared = declared_storage_sizes(archive.read(info))
    for key, nbytes in sorted(declared.items()):
        record = f"{prefix}data/{key}"
        if record not in infos:
            return f"record {short_repr(record, 200)} is missing"
        if infos[record].file_size < nbytes:
            return (f"record {short_repr(record, 200)} holds {infos[record].file_size} bytes but its tensor storage "
                    f"declares {nbytes}")
    return None
