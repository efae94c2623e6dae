"""quickstart.sh's pip step shows pip's progress: pip's stdout is the terminal (not a pipe, where
pip draws no progress bar), only stderr is filtered, and a failing pip stops with its code."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A stand-in for the venv's python: records its arguments and where its stdout goes, warns, fails.
FAKE_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$RECORD.args"
readlink /proc/$$/fd/1 > "$RECORD.stdout"
echo "Downloading torch (888.1 MB)"
echo "WARNING: Location 'x' is ignored" >&2
echo "WARNING: something worth seeing" >&2
exit 3
"""


def _pip_install_function() -> str:
    text = (ROOT / "quickstart.sh").read_text()
    match = re.search(r"^pip_install\(\) \{.*?^\}$", text, flags=re.M | re.S)
    assert match, "quickstart.sh defines no pip_install function"
    return match.group(0)


def test_pip_output_goes_straight_to_the_terminal(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    record = tmp_path / "record"
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    script = f"set -euo pipefail\n{_pip_install_function()}\npip_install {fake} torch==2.8.0 -e .\n"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        code = subprocess.run(["bash", "-c", script], stdout=stdout, stderr=stderr, timeout=60,
                              env={**os.environ, "RECORD": str(record)}).returncode
    assert code == 3  # pip's exit code
    args = (tmp_path / "record.args").read_text().split()
    assert args[:3] == ["-m", "pip", "install"] and "-q" not in args
    assert args[args.index("--progress-bar") + 1] == "on"
    assert (tmp_path / "record.stdout").read_text().strip() == str(out)  # the terminal itself, no pipe
    assert "Downloading torch (888.1 MB)" in out.read_text()
    errors = err.read_text()
    assert "something worth seeing" in errors and "WARNING: Location" not in errors
    assert "ERROR: pip install torch==2.8.0 -e . failed (exit 3)" in errors
