"""What an exported recognizer folder holds, and the checks a reader makes before trusting it.

Standard library only (the ONNX runner imports it where torch is not installed). Format
version :data:`FORMAT_VERSION`; the folder (``recycle-distill export <experiment> --format onnx``):

* ``acoustic.onnx``: ``waveforms`` (B, S) float32 and ``lengths`` (B,) int64 valid samples in;
  ``cif`` (B, N, d) float32 (the CIF vectors, zero rows after each utterance's firings; N is
  fixed by S, not by the firings), ``cif_lengths`` (B,) int64 (firings, at least 1), ``alpha``
  (B, T) float32 (the CIF weights of the encoder frames, zero on padding), ``frame_lengths``
  (B,) int64 (valid encoder frames) and ``hidden`` (B, T, d) float32 (the encoder output, for
  the rare utterance the runner settles in NumPy, :mod:`.onnx_near_ties`) out. The student, the
  featurizer's layer weights, the encoder, the weight predictor and the integrate-and-fire are
  one loop-free graph.
* ``decoder_step.onnx``: one decoder step. ``prev_token`` (B,) int64, ``prev_cif`` (B, d),
  ``cif`` (B, d) float32, ``past_keys`` / ``past_values`` (layers, B, heads, steps, d / heads)
  float32 (``steps`` = 0 at the first step) in; ``log_probs`` (B, V) float32 and ``keys`` /
  ``values`` (layers, B, heads, steps + 1, d / heads) out.
* ``vocab.json``: the unit vocabulary (``cif_asr``'s ``UnitVocabulary`` file).
* ``recognizer.json``: :data:`FORMAT_NAME`, :data:`FORMAT_VERSION` and the numbers below.
"""

from __future__ import annotations

import json
import os
from typing import Any

from recycle_distill.util.messages import plain, short_repr

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "ACOUSTIC_FILE", "DECODER_FILE", "VOCAB_FILE", "METADATA_FILE", "OWN_FILES",
    "GRAPHS", "DTYPES", "read_metadata", "is_our_folder",
]

FORMAT_NAME = "recycle-distill-onnx-recognizer"
FORMAT_VERSION = 1  # bump when a graph's inputs, outputs or a metadata key change meaning
ACOUSTIC_FILE = "acoustic.onnx"
DECODER_FILE = "decoder_step.onnx"
VOCAB_FILE = "vocab.json"
METADATA_FILE = "recognizer.json"
OWN_FILES = (ACOUSTIC_FILE, DECODER_FILE, VOCAB_FILE, METADATA_FILE)
DTYPES = ("fp32", "int8")
MAX_DIM = 2**31 - 1

# graph file -> (inputs, outputs), each name -> (ONNX Runtime element type, rank)
GRAPHS: dict[str, tuple[dict[str, tuple[str, int]], dict[str, tuple[str, int]]]] = {
    ACOUSTIC_FILE: (
        {"waveforms": ("tensor(float)", 2), "lengths": ("tensor(int64)", 1)},
        {"cif": ("tensor(float)", 3), "cif_lengths": ("tensor(int64)", 1), "alpha": ("tensor(float)", 2),
         "frame_lengths": ("tensor(int64)", 1), "hidden": ("tensor(float)", 3)},
    ),
    DECODER_FILE: (
        {"prev_token": ("tensor(int64)", 1), "prev_cif": ("tensor(float)", 2), "cif": ("tensor(float)", 2),
         "past_keys": ("tensor(float)", 5), "past_values": ("tensor(float)", 5)},
        {"log_probs": ("tensor(float)", 2), "keys": ("tensor(float)", 5), "values": ("tensor(float)", 5)},
    ),
}

# recognizer.json key -> (kind, low, high); kind "int" (a JSON integer) or "float" (finite number)
NUMBERS: dict[str, tuple[str, float, float]] = {
    "sample_rate": ("int", 16000, 16000),
    "receptive_field": ("int", 1, 60 * 16000),
    "frame_rate": ("int", 1, 60 * 16000),  # samples per encoder (CIF) frame
    "d_model": ("int", 1, MAX_DIM),
    "decoder_layers": ("int", 1, 1000),
    "decoder_heads": ("int", 1, MAX_DIM),
    "vocab_size": ("int", 1, MAX_DIM),
    "bos": ("int", 0, MAX_DIM),
    "eos": ("int", 0, MAX_DIM),
    "beam_size": ("int", 1, 10000),
    "max_steps": ("int", 1, 10**7),
    "threshold": ("float", 0.0, 1.0),
    "tail_threshold": ("float", 0.0, 1.0),
}
TEXT = ("upstream", "language", "dtype", "package_version")


def is_our_folder(folder: str) -> bool:
    """True when ``folder/recognizer.json`` is JSON naming :data:`FORMAT_NAME` (an export of ours)."""
    try:
        with open(os.path.join(folder, METADATA_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def read_metadata(folder: str) -> dict[str, Any]:
    """``recognizer.json`` of an exported folder, checked: our format and version, every key of
    :data:`NUMBERS` a number in its range, the text keys strings, ``banned`` a list of indices.

    Raises:
        FileNotFoundError, ValueError: one line naming the file and the key.
    """
    path = os.path.join(folder, METADATA_FILE)
    shown = plain(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{shown}: no such file; is {plain(folder)} a folder written by "
                                f"'recycle-distill export <experiment> --format onnx'?")
    if os.path.getsize(path) > 2**20:
        raise ValueError(f"{shown}: {os.path.getsize(path)} bytes; an export writes well under 1 MiB")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{shown}: not JSON ({short_repr(str(err), 120)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{shown}: key 'format' is {short_repr(found)}, not {FORMAT_NAME!r}: not an exported "
                         f"recognizer")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{shown}: key 'version' is {short_repr(data.get('version'))}; this package reads version "
                         f"{FORMAT_VERSION}: export the experiment again with this version")
    for key, (kind, low, high) in NUMBERS.items():
        _check_number(data, key, kind, low, high, shown)
    for key in TEXT:
        if not isinstance(data.get(key), str):
            raise ValueError(f"{shown}: key {key!r} must be a string, got {short_repr(data.get(key))}")
    if data["dtype"] not in DTYPES:
        raise ValueError(f"{shown}: key 'dtype' is {short_repr(data['dtype'])}; exports write {', '.join(DTYPES)}")
    banned = data.get("banned")
    if not isinstance(banned, list) or not all(_is_int(v) and 0 <= v < data["vocab_size"] for v in banned):
        raise ValueError(f"{shown}: key 'banned' must be a list of unit indices below vocab_size "
                         f"{data['vocab_size']}, got {short_repr(banned)}")
    for key in ("bos", "eos"):
        if data[key] >= data["vocab_size"]:
            raise ValueError(f"{shown}: key {key!r} is {data[key]}, not below vocab_size {data['vocab_size']}")
    if data["d_model"] % data["decoder_heads"]:
        raise ValueError(f"{shown}: key 'd_model' ({data['d_model']}) is not a multiple of key 'decoder_heads' "
                         f"({data['decoder_heads']})")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(data: dict, key: str, kind: str, low: float, high: float, shown: str) -> None:
    value = data.get(key)
    if kind == "int":
        ok = _is_int(value) and low <= value <= high
        wanted = f"a whole number from {low:g} to {high:g}"
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        wanted = f"a number from {low:g} to {high:g}"
    if not ok:
        raise ValueError(f"{shown}: key {key!r} must be {wanted}, got {short_repr(value)}")
