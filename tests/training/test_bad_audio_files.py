"""Audio folders a careless user hands the trainer (issue 11 bug 9): dangling symlinks,
symlink loops and file names a TSV line cannot hold are skipped and counted, and the
manifest cache still round-trips."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import soundfile

from recycle_distill.training.data.manifest import read_tsv_manifest, write_tsv_manifest
from recycle_distill.training.data.scan import scan_folder


def _wav(path, seconds=0.1):
    soundfile.write(path, np.zeros(int(16000 * seconds), dtype=np.float32), 16000)


def test_dangling_symlink_is_skipped_and_counted(tmp_path, caplog):
    audio = tmp_path / "audio"
    audio.mkdir()
    _wav(audio / "good.wav")
    (audio / "dangling.wav").symlink_to(audio / "deleted.wav")
    with caplog.at_level(logging.WARNING):
        manifest = scan_folder(audio, cache_dir=tmp_path / "cache")
    assert [os.path.basename(e.path) for e in manifest] == ["good.wav"]
    assert manifest.unreadable == [str(audio / "dangling.wav")]
    assert "skipping unreadable audio file" in caplog.text and "dangling.wav" in caplog.text
    again = scan_folder(audio, cache_dir=tmp_path / "cache")
    assert again.from_cache and [e.path for e in again] == [e.path for e in manifest]


def test_symlink_loop_does_not_hang_the_scan(tmp_path):
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    _wav(audio / "sub" / "a.wav")
    (audio / "sub" / "loop").symlink_to(audio)
    manifest = scan_folder(audio, use_cache=False)
    assert [os.path.relpath(e.path, audio) for e in manifest] == ["sub/a.wav"]


@pytest.mark.parametrize("name", ["tab\there.wav", "new\nline.wav", "carriage\rreturn.wav"])
def test_names_a_tsv_line_cannot_hold_are_skipped_and_the_cache_round_trips(tmp_path, name, caplog):
    audio = tmp_path / "audio"
    audio.mkdir()
    _wav(audio / "good.wav")
    _wav(audio / "form\x0cfeed.wav")  # legal in a TSV line: kept
    _wav(audio / name)
    with caplog.at_level(logging.WARNING):
        manifest = scan_folder(audio, cache_dir=tmp_path / "cache")
    kept = sorted(os.path.basename(e.path) for e in manifest)
    assert kept == ["form\x0cfeed.wav", "good.wav"]
    assert manifest.unreadable == [str(audio / name)]
    assert "its name holds a tab or a line break" in caplog.text and repr(str(audio / name)) in caplog.text
    cached = scan_folder(audio, cache_dir=tmp_path / "cache")
    assert cached.from_cache
    assert sorted(os.path.basename(e.path) for e in cached) == kept
    assert [e.num_samples for e in cached] == [e.num_samples for e in manifest]


def test_tsv_reader_splits_lines_only_at_newlines(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    names = ["a\x0bb.wav", "c\x1cd.wav", "e\u2028f.wav", "g\x85h.wav"]
    for name in names:
        _wav(audio / name)
    manifest = scan_folder(audio, use_cache=False)
    tsv = write_tsv_manifest(list(manifest), tmp_path / "m.tsv", root=audio, extended=True)
    back = read_tsv_manifest(tsv)
    assert sorted(os.path.basename(e.path) for e in back) == sorted(names)
