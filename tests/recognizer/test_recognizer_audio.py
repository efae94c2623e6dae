"""Recordings in (``recycle_distill.recognizer.audio``): finding them, reading them as 16 kHz mono,
refusing broken ones with a reason, batching by length."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from recycle_distill.recognizer.audio import AudioError, check_wave, collect_audio, length_batches, read_audio


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_folders_are_searched_recursively_and_lists_expanded(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.wav", "a/b/two.FLAC", "a/b/three.ogg"):
        soundfile.write(tmp_path / name, _tone(0.1, 16000), 16000)
    (tmp_path / "a" / "notes.md").write_text("not audio")
    listing = tmp_path / "list.txt"
    listing.write_text("# recordings\na/one.wav\n\n" + str(tmp_path / "a" / "b" / "two.FLAC") + "\n")
    assert collect_audio([tmp_path / "a"]) == sorted([tmp_path / "a" / "one.wav", tmp_path / "a" / "b" / "two.FLAC",
                                                      tmp_path / "a" / "b" / "three.ogg"])
    assert collect_audio([listing]) == [tmp_path / "a" / "one.wav", tmp_path / "a" / "b" / "two.FLAC"]
    # A file named directly is taken whatever its suffix; duplicates are read once.
    assert collect_audio([tmp_path / "a" / "notes.md", tmp_path / "a" / "notes.md"]) == [tmp_path / "a" / "notes.md"]
    with pytest.raises(FileNotFoundError, match="missing.wav: no such audio file"):
        collect_audio([tmp_path / "missing.wav"])


def test_stereo_is_mixed_down_and_other_rates_resampled(tmp_path):
    left, right = _tone(0.5, 44100), np.full(int(0.5 * 44100), 0.1, dtype=np.float32)
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    wave = read_audio(tmp_path / "stereo.wav")
    assert wave.dtype == np.float32 and wave.shape == (8000,)  # 0.5 s at 16 kHz
    # The mean of the channels: the constant 0.1 shifts the tone's mean by 0.05.
    assert float(wave[1000:7000].mean()) == pytest.approx(0.05, abs=5e-3)
    soundfile.write(tmp_path / "low.wav", _tone(0.5, 8000), 8000, subtype="FLOAT")
    assert read_audio(tmp_path / "low.wav").shape == (8000,)
    soundfile.write(tmp_path / "same.flac", _tone(0.5, 16000), 16000)
    np.testing.assert_allclose(read_audio(tmp_path / "same.flac"), _tone(0.5, 16000), atol=1e-4)


def test_broken_recordings_are_refused_with_a_reason(tmp_path):
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    (tmp_path / "text.wav").write_text("hello\n")
    with pytest.raises(AudioError, match="^empty$"):
        read_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="^unreadable"):
        read_audio(tmp_path / "text.wav")
    nan = _tone(0.1, 16000)
    nan[10] = np.nan
    with pytest.raises(AudioError, match="non-finite"):
        check_wave(nan)
    with pytest.raises(AudioError, match="shorter than 400 samples"):
        check_wave(np.zeros(399, np.float32))
    with pytest.raises(AudioError, match="1-D"):
        check_wave(np.zeros((2, 800), np.float32))


def test_batches_stay_within_the_padded_size_longest_first():
    lengths = [100, 400, 250, 90, 400, 1000]
    batches = length_batches(lengths, max_samples=800)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert batches[0] == [5]  # longer than the limit: alone
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 800
    assert batches[1] == [1, 4]  # the two of 400 fill 800 exactly
    with pytest.raises(ValueError, match="at least one sample"):
        length_batches(lengths, 0)
