"""A hub entry with no checkpoint, offline: one fast line saying the default is the published
release, that it could not be fetched, and how to go on (recycle_distill/checkpoint/fetch.py).

No network is simulated by pointing huggingface_hub's endpoint (``HF_ENDPOINT``) at a closed local
port; huggingface_hub on its own retries there for about 25 s and ends in a generic error.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from recycle_distill import families
from recycle_distill.checkpoint import fetch
from recycle_distill.checkpoint.fetch import ReleaseUnavailable, released_checkpoint

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """huggingface_hub's cache in tmp_path and its endpoint at a closed port; returns the cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hub"


def test_torch_hub_default_entry_offline_fails_fast_in_one_line(hub, monkeypatch, tmp_path, caplog):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    started = time.monotonic()
    with pytest.raises(ReleaseUnavailable) as caught:
        torch.hub.load(str(REPO), "armhubert", source="local")
    assert time.monotonic() - started < 5.0  # one refused connection, no retries
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("armhubert: without a checkpoint it loads the published default armhubert_960h, "
                              "whose file ARMHuBERT-960h.ckpt (sungnyun/ARMHuBERT on the Hugging Face Hub) "
                              "could not be fetched (the Hugging Face Hub does not answer: ConnectionError")
    assert message.endswith(
        "continue with ckpt=<a local checkpoint> (S3PRL: -k FILE), with HF_HUB_OFFLINE=1 once the file is in the "
        "Hugging Face cache, or with random weights: recycle-distill export armhubert --format safetensors "
        "-o armhubert-random.safetensors, then ckpt=armhubert-random.safetensors")
    assert "Retrying" not in caplog.text


def cache_file(cache: Path, name: str) -> Path:
    """Put a file for release ``name`` into the huggingface_hub cache layout; returns its path."""
    repo = cache / ("models--" + families.HF_REPO.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    path = repo / "snapshots" / commit / families.RELEASES[name].filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"cached")
    return path


def test_offline_with_the_file_cached_uses_it_without_retrying(hub):
    path = cache_file(hub, "maskhubert_960h")
    assert released_checkpoint("maskhubert_960h") == str(path)


def test_hf_hub_offline_without_the_file_says_so(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(fetch, "_hub_unreachable", lambda *args: pytest.fail("HF_HUB_OFFLINE: no request"))
    with pytest.raises(ReleaseUnavailable, match=r"^maskhubert_960h: the published checkpoint MaskHuBERT-960h.ckpt "
                                                 r".*\(HF_HUB_OFFLINE is set and it is not in the Hugging Face "
                                                 r"cache\); .*recycle-distill export maskhubert "):
        released_checkpoint("maskhubert_960h")
