"""``benchmarks/attention_variants.py --quick``: every formulation it times computes attention
(its error column against float64 stays within the bf16 bound) and the phase split is printed."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_attention_variants_runs_quick_and_every_row_attends():
    env = {**os.environ, "KINETO_LOG_LEVEL": "5"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "attention_variants.py"), "--quick", "--no-compile"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = re.findall(r"^(fast blocks.*?|exp without.*?|reuse layer.*?|\d heads? per block.*?|all heads.*?|SDPA.*?|head dim.*?)\s{2,}\S+\s+\S+\s+\S+\s+(\S+)", done.stdout, re.M)
    assert len(rows) == 2 * 12  # two shapes, ten eager attention rows and two reuse rows each
    # bf16 inputs, scores, probabilities and output: four roundings at 2^-9 stay under 1e-2.
    assert all(float(error) < 1e-2 for _, error in rows), rows
    assert done.stdout.count("phase split of the shipped blocks") == 2
