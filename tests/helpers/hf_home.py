"""A temporary HF_HOME for every test of a module that imports :func:`hf_home` (an autouse fixture)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def hf_home(tmp_path, monkeypatch):
    """trust_remote_code copies the generated files into HF_HOME's modules cache: keep it temporary."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(home / "modules"))
    return home
