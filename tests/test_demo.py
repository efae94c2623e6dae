"""The README's main job, `recycle-distill demo`, runs end to end (short settings)."""

import os
import subprocess
import sys

import pytest

from recycle_distill.data.synth import espeak_available
from recycle_distill.demo.voxceleb import make_voxceleb1_layout


@pytest.mark.slow
@pytest.mark.s3prl
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo_out"
    result = subprocess.run(
        [sys.executable, "-m", "recycle_distill.cli", "demo", "--out", str(out), "--steps", "6", "--sid-steps", "4",
         "--speakers", "3"],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("corpus", "teacher", "distil", "load", "sid", "report"):
        assert f"] {stage}" in result.stdout
    report = (out / "report.md").read_text()
    assert (out / "loss.png").stat().st_size > 1000
    assert list((out / "sid").glob("states-*.ckpt"))
    assert "| teacher |" in report and "| student |" in report and "real-time factor" in report
    assert "accuracy: dev" in report
    if espeak_available():
        assert "corpus: **espeak-ng** speech" in report
    else:
        assert "SYNTHETIC" in report and "SYNTHETIC" in result.stdout


def test_voxceleb_layout_follows_s3prl_conventions(tmp_path):
    from recycle_distill.data.synth import make_tiny_librispeech

    make_tiny_librispeech(tmp_path / "ls", speakers=2, utterances_per_speaker=4, use_espeak=False)
    counts = make_voxceleb1_layout(tmp_path / "ls", tmp_path / "vox")
    assert counts == {"train": 4, "dev": 2, "test": 2, "speakers": 2}
    lines = (tmp_path / "vox" / "iden_split.txt").read_text().split("\n")
    assert lines[0].startswith("1 id10001/") and any(line.startswith("3 id10002/") for line in lines)
    for line in filter(None, lines):
        split, relative = line.split()
        assert (tmp_path / "vox" / ("test" if split == "3" else "dev") / "wav" / relative).exists()


def test_failing_stage_is_named(tmp_path, monkeypatch):
    from recycle_distill.demo import pipeline

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "_teacher", broken)
    messages = []
    with pytest.raises(pipeline.DemoError, match="stage 'teacher' failed: OSError: disk full"):
        pipeline.run_demo(pipeline.DemoOptions(out=tmp_path, speakers=2, utterances_per_speaker=3, echo=messages.append))
    assert "[1/6] corpus" in "\n".join(messages)
