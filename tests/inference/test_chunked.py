"""Chunked processing of long recordings (inference/chunked.py, StudentUpstream(chunk_seconds=...))."""

from __future__ import annotations

import pytest
import torch

from recycle_distill.inference.chunked import ChunkSettings, chunk_settings, chunk_windows
from recycle_distill.lab.analysis.precision_error import layer_errors
from recycle_distill.s3prl.upstream import StudentUpstream

from helpers.map_free import padded_batch


@pytest.mark.parametrize("frames, span, context", [(100, 10, 3), (7, 10, 5), (50, 1, 0), (49, 7, 100)])
def test_windows_keep_every_frame_once_in_order_with_context_around(frames, span, context):
    windows = chunk_windows(frames, span, context)
    kept = [frame for _, _, start, end in windows for frame in range(start, end)]
    assert kept == list(range(frames))
    for first, last, start, end in windows:
        assert first == max(0, start - context) and last == min(frames, end + context)
        assert end - start <= span


@pytest.mark.parametrize("chunk, overlap, message", [
    (0, None, "chunk_seconds: expected a number of seconds > 0, got 0"),
    (-2.0, 1.0, "chunk_seconds: expected a number of seconds > 0"),
    ("10", None, "chunk_seconds: expected a number of seconds > 0, got '10'"),
    (float("nan"), None, "chunk_seconds"),
    (True, None, "chunk_seconds"),
    (10.0, -1.0, "overlap_seconds: expected a number of seconds >= 0"),
    (10.0, "2", "overlap_seconds"),
    (None, 2.0, "overlap_seconds=2.0 needs chunk_seconds"),
])
def test_bad_chunk_options_are_refused_by_name(chunk, overlap, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        chunk_settings(chunk, overlap)


def test_settings_in_frames():
    assert chunk_settings(None, None) is None
    assert chunk_settings(10, None) == ChunkSettings(10.0, 0.0)
    assert ChunkSettings(10.0, 2.0).frames(320) == (500, 100)
    assert ChunkSettings(0.001, 0.0).frames(320) == (1, 0)


@pytest.fixture
def upstreams(tiny_arm_files):
    ckpt, config, _ = tiny_arm_files

    def make(**options):
        return StudentUpstream(ckpt, config, family="armhubert", **options)
    return make


def test_a_window_as_long_as_the_recording_is_the_full_run(upstreams):
    waves, lengths = padded_batch([3.0, 2.2])
    wavs = [waves[0], waves[1, : lengths[1]]]
    whole = upstreams()
    with torch.inference_mode():
        # One at a time: in a padded batch the CNN's GroupNorm sees the padding.
        full = [whole([wave])["hidden_states"] for wave in wavs]
        chunked = upstreams(chunk_seconds=10.0, overlap_seconds=1.0)(wavs)["hidden_states"]
    frames = [149, 109]
    for layer, states in enumerate(chunked):
        assert states.shape[:2] == (2, 149)
        for index, count in enumerate(frames):
            assert torch.equal(states[index, :count], full[index][layer][0])  # the same computation
        assert not states[1, frames[1]:].any()  # zeros after the shorter recording


def test_windows_line_up_with_the_full_run_and_context_reduces_the_deviation(upstreams):
    """Misaligned windows (a frame off) would leave every frame O(1) off whatever the context;
    aligned ones deviate only through the missing context, less with more of it."""
    waves, _ = padded_batch([12.0], seed=3)
    with torch.inference_mode():
        full = upstreams()([waves[0]])["hidden_states"]
        deviation = {}
        for overlap in (0.0, 1.0, 4.0):
            chunked = upstreams(chunk_seconds=2.0, overlap_seconds=overlap)([waves[0]])["hidden_states"]
            deviation[overlap] = max(error.relative_l2 for error in layer_errors(full, chunked))
        shifted = [torch.cat([state[:, 1:], state[:, -1:]], dim=1) for state in full]
        misaligned = max(error.relative_l2 for error in layer_errors(full, shifted))
    assert deviation[4.0] < deviation[1.0] < deviation[0.0], deviation
    assert deviation[4.0] < misaligned / 3, (deviation, misaligned)


def test_chunking_through_the_hub_entry(tiny_arm_files):
    from recycle_distill.s3prl.hub_entries import load_upstream

    ckpt, config, _ = tiny_arm_files
    upstream = load_upstream("armhubert", str(ckpt), str(config), chunk_seconds=1.0, overlap_seconds=0.5)
    assert upstream.chunking == ChunkSettings(1.0, 0.5)
    waves, _ = padded_batch([2.5])
    with torch.inference_mode():
        states = upstream([waves[0]])["hidden_states"]
    assert states[0].shape[:2] == (1, 124)


@pytest.mark.onnx
def test_the_onnx_entry_chunks_as_the_torch_upstream_does(tiny_arm_files, tmp_path):
    """Same windows, same states within the ONNX parity bound of tests/inference/test_onnx.py
    (1e-4 of each layer's max |value|); and the windows really cut (the unchunked run differs)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from recycle_distill.inference.onnx_export import export_onnx
    from recycle_distill.s3prl.hub_entries import load_onnx_upstream
    from helpers.tiny_students import tiny_student

    ckpt, config, _ = tiny_arm_files
    path = tmp_path / "tiny.onnx"
    export_onnx(tiny_student("armhubert"), path, family="armhubert", example_seconds=1.0)
    options = dict(chunk_seconds=2.0, overlap_seconds=1.0)
    onnx_upstream = load_onnx_upstream("armhubert", str(path), **options)
    torch_upstream = StudentUpstream(ckpt, config, family="armhubert", optimize=False, **options)
    waves, lengths = padded_batch([6.0, 4.3], seed=5)
    wavs = [waves[0], waves[1, : lengths[1]]]
    with torch.inference_mode():
        expected = torch_upstream(wavs)["hidden_states"]
        got = onnx_upstream(wavs)["hidden_states"]
        whole = load_onnx_upstream("armhubert", str(path))(wavs)["hidden_states"]
    for ours, reference, unchunked in zip(got, expected, whole, strict=True):
        assert ours.shape == reference.shape == unchunked.shape
        scale = float(reference.abs().max())
        assert float((ours - reference).abs().max()) <= 1e-4 * scale
        assert float((unchunked[0] - reference[0]).abs().max()) > 1e-2 * scale
