"""``recycle-distill transcribe`` and ``Recognizer.from_experiment(...).transcribe(...)`` on the
trained espeak-ng digits experiment (``helpers.trained_recognizer``): the reference transcripts
come back, every token's span lies inside its recording and in order, broken files are counted
and skipped, outputs never replace an input."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional

from recycle_distill.cli import main
from recycle_distill.recognizer import Recognizer, Transcript
from recycle_distill.recognizer.audio import Skipped
from recycle_distill.recognizer.experiment import ExperimentError, build_upstream
from recycle_distill.recognizer.transcript import TokenTime

from helpers.trained_recognizer import trained_digits_experiment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return trained_digits_experiment(tmp_path_factory)


@pytest.fixture(scope="module")
def recognizer(experiment):
    expdir, _, _ = experiment
    return Recognizer.from_experiment(expdir)


def _check_times(transcript: Transcript, duration: float) -> None:
    assert transcript.duration == pytest.approx(duration)
    assert " ".join(t.token for t in transcript.tokens) == transcript.text
    starts = [t.start for t in transcript.tokens]
    ends = [t.end for t in transcript.tokens]
    assert all(0.0 <= t.start < t.end <= duration for t in transcript.tokens), transcript
    assert starts == sorted(starts) and ends == sorted(ends), transcript


def test_api_gives_the_reference_transcripts_with_token_times(experiment, recognizer):
    _, waves, texts = experiment
    transcripts = recognizer.transcribe(waves)
    assert [t.text for t in transcripts] == texts
    for transcript, wave in zip(transcripts, waves):
        assert transcript.source is None
        _check_times(transcript, len(wave) / 16000)


def test_batching_keeps_the_text_and_moves_spans_by_at_most_a_frame(experiment, recognizer):
    """S3PRL's featurizer keeps round(S / 320) frames per recording; for a recording padded in a
    batch that can be one frame more than its CNN makes alone (the extra frame sees padding), so
    the recognizer's weights differ slightly between batched and alone, as in S3PRL's own
    evaluation. The text stays, and a span moves by at most one CIF frame."""
    _, waves, texts = experiment
    together = recognizer.transcribe(waves)
    recognizer.batch_seconds = 0.5  # every recording alone
    try:
        alone = recognizer.transcribe([w.numpy() for w in waves])
    finally:
        recognizer.batch_seconds = 60.0
    assert [t.text for t in alone] == [t.text for t in together] == texts
    frame = recognizer.experiment.frame_seconds
    for a, b in zip(alone, together):
        for x, y in zip(a.tokens, b.tokens):
            assert abs(x.start - y.start) <= frame + 1e-9 and abs(x.end - y.end) <= frame + 1e-9, (a, b)


def test_api_skips_broken_waves_and_reads_paths(experiment, recognizer, tmp_path):
    expdir, waves, texts = experiment
    soundfile.write(tmp_path / "first.wav", waves[0].numpy(), 16000, subtype="FLOAT")
    skipped: list = []
    nan = waves[1].clone()
    nan[5] = float("nan")
    out = recognizer.transcribe([str(tmp_path / "first.wav"), torch.zeros(0), nan, waves[2]], skipped=skipped)
    assert [(t.source, t.text) for t in out] == [(str(tmp_path / "first.wav"), texts[0]), (None, texts[2])]
    assert skipped == [Skipped("waveform 1", "empty"), Skipped("waveform 2", "non-finite samples (NaN or inf)")]
    # A checkpoint path works as well as its folder.
    again = Recognizer.from_experiment(expdir / "dev-best.ckpt", beam=1).transcribe(waves[:2])
    assert [t.text for t in again] == texts[:2]


def _write_mixed_folder(folder, waves) -> None:
    """Recording 0 as 44.1 kHz stereo, recording 1 as 8 kHz FLAC, an empty file and a text file named .wav."""
    (folder / "sub").mkdir(parents=True)
    stereo = torchaudio.functional.resample(waves[0], 16000, 44100).numpy()
    soundfile.write(folder / "a_stereo.wav", np.stack([stereo, stereo], axis=1), 44100, subtype="FLOAT")
    soundfile.write(folder / "sub" / "b_low.flac", torchaudio.functional.resample(waves[1], 16000, 8000).numpy(), 8000)
    soundfile.write(folder / "c_empty.wav", np.zeros(0, np.float32), 16000)
    (folder / "d_text.wav").write_text("this is not audio\n")


def test_cli_on_a_mixed_folder(experiment, tmp_path, capsys):
    expdir, waves, texts = experiment
    audio = tmp_path / "audio"
    _write_mixed_folder(audio, waves)
    out = tmp_path / "out" / "result"
    assert main(["transcribe", "-e", str(expdir), str(audio), "-o", str(out), "--no-progress", "--beam", "10"]) == 0
    printed = capsys.readouterr()
    assert "transcribed 2 recordings" in printed.out and "skipped 2 (empty 1, unreadable 1)" in printed.out
    assert "real-time factor" in printed.out
    assert f"skipped {audio / 'c_empty.wav'}: empty" in printed.err
    lines = (tmp_path / "out" / "result.txt").read_text().splitlines()
    assert lines == [f"{audio / 'a_stereo.wav'}\t{texts[0]}", f"{audio / 'sub' / 'b_low.flac'}\t{texts[1]}"]
    records = [json.loads(line) for line in (tmp_path / "out" / "result.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == texts[:2]
    for record, wave in zip(records, waves):
        tokens = tuple(record.pop("tokens"))
        transcript = Transcript(tokens=tuple(TokenTime(**t) for t in tokens), **record)
        # The resampled copies differ from the originals by at most a few samples.
        _check_times(transcript, transcript.duration)
        assert transcript.duration == pytest.approx(len(wave) / 16000, abs=1e-3)
    # Existing outputs need --force; an input is never an output.
    assert main(["transcribe", "-e", str(expdir), str(audio), "-o", str(out), "--no-progress"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err


def test_output_over_an_input_is_refused(experiment, tmp_path, capsys):
    expdir, waves, _ = experiment
    listing = tmp_path / "in.txt"
    soundfile.write(tmp_path / "x.wav", waves[0].numpy(), 16000)
    listing.write_text("x.wav\n")
    before = listing.read_text()
    assert main(["transcribe", "-e", str(expdir), str(listing), "-o", str(tmp_path / "in"), "--force"]) == 1
    assert "is one of the inputs" in capsys.readouterr().err
    assert listing.read_text() == before


def test_not_an_experiment_is_one_line_naming_the_path(tmp_path):
    with pytest.raises(ExperimentError, match="holds neither dev-best.ckpt nor states-<step>.ckpt"):
        Recognizer.from_experiment(tmp_path)
    (tmp_path / "dev-best.ckpt").write_text("not a checkpoint")
    with pytest.raises(ExperimentError, match="not a readable S3PRL checkpoint: .*dev-best.ckpt"):
        Recognizer.from_experiment(tmp_path)
    torch.save({"Args": {}, "Config": {}}, tmp_path / "dev-best.ckpt")
    with pytest.raises(ExperimentError, match="not an S3PRL downstream checkpoint .missing Featurizer, Downstream."):
        Recognizer.from_experiment(tmp_path)


def test_student_upstream_in_bf16(experiment):
    expdir, waves, texts = experiment
    recognizer = Recognizer.from_experiment(expdir, upstream_dtype="bf16")
    assert recognizer.experiment.upstream.precision == "bf16"
    transcripts = recognizer.transcribe(waves)
    assert len(transcripts) == len(waves)
    for transcript, wave in zip(transcripts, waves):
        _check_times(transcript, len(wave) / 16000)
    assert [t.text for t in transcripts] == texts  # measured: bf16 features keep all 8 transcripts


def test_upstream_dtype_is_refused_for_an_s3prl_upstream():
    with pytest.raises(ExperimentError, match="only recycle-distill's students take a precision"):
        build_upstream(argparse.Namespace(upstream="fbank", upstream_ckpt=None, upstream_model_config=None), "bf16")
