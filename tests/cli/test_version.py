"""``recycle-distill --version`` (issue 23 item 7): the installed package's version, torch's and Python's."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata


def test_version_prints_the_installed_versions_and_exits_zero():
    done = subprocess.run([sys.executable, "-m", "recycle_distill", "--version"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    # What pip installed (setup.py's version), not the constant the command prints.
    expected = (f"recycle-distill {metadata.version('recycle-distill')} (torch {metadata.version('torch')}, "
                f"Python {platform.python_version()})")
    assert done.stdout.strip() == expected
    assert done.stderr == ""
