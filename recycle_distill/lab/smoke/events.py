"""Scalars from the TensorBoard event files S3PRL's runner writes into an expdir.

The files are TFRecords (8-byte length, 4-byte CRC, an ``Event`` protobuf, 4-byte CRC); the
protobuf classes are tensorboardX's, which S3PRL's runner itself writes with. The CRCs are not
checked: a file cut short by a killed run, or a record that does not decode, ends the read of
that file instead.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Union

__all__ = ["read_scalars"]

PathLike = Union[str, "os.PathLike[str]"]
RECORD_LIMIT = 1 << 26  # a scalar event is tens of bytes; a larger record is not one we read


def _records(path: Path):
    """The payload of every whole record in one event file."""
    with open(path, "rb") as handle:
        while True:
            header = handle.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            if length > RECORD_LIMIT:
                return
            data = handle.read(length)
            if len(data) < length or len(handle.read(4)) < 4:
                return
            yield data


def read_scalars(expdir: PathLike, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every ``tag`` scalar in ``expdir/events.out.tfevents.*``, by step
    (the last written wins for a repeated step); empty when there are none."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto.event_pb2 import Event

    found: dict[int, float] = {}
    for path in sorted(Path(expdir).glob("events.out.tfevents.*")):
        for data in _records(path):
            try:
                event = Event.FromString(data)
            except DecodeError:  # a damaged record: the rest of this file cannot be trusted
                break
            for value in event.summary.value:
                if value.tag == tag:
                    found[int(event.step)] = float(value.simple_value)
    return sorted(found.items())
