"""benchmarks/b9_recognizer.py: the whole recognizer per format (PyTorch fp32, bf16 student, ONNX
Runtime fp32 and int8), its --quick run and its unit-error measure."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import b9_recognizer  # noqa: E402


def test_unit_errors_count_edits_over_the_reference_units():
    reference = [[5, 6, 7, 8], [9]]
    assert b9_recognizer.unit_errors(reference, reference) == 0.0
    # one substitution and one deletion over five reference units
    assert b9_recognizer.unit_errors([[5, 6, 9], [9]], reference) == pytest.approx(2 / 5)


@pytest.mark.slow  # the 2-layer ARMHuBERT preset, two recognizer exports and eight timed runs: ~1 min on 2 busy cores
@pytest.mark.onnx
def test_b9_quick_reports_every_format(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "b9.json"
    env = dict(os.environ, KINETO_LOG_LEVEL="5")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "b9_recognizer.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert list(results["series"]) == ["1", "2"]
    for series in results["series"].values():
        assert set(series) == set(b9_recognizer.FORMATS) | {"goal"}
        assert series["torch fp32"]["speedup"] == 1.0 and series["torch fp32"]["unit_errors"] == 0.0
        assert all(series[fmt]["rtf"] > 0 and 0 <= series[fmt]["unit_errors"] for fmt in b9_recognizer.FORMATS)
        assert series["goal"]["best"] in b9_recognizer.FORMATS[1:]
    assert "goal (batch 1): best deployable format >= 2x torch fp32" in done.stdout
