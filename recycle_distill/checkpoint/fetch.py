"""Where checkpoints come from: local paths, URLs, and the published files on the Hugging Face Hub.

Hub downloads go through the real ``huggingface_hub`` client, so its cache, ``HF_HOME`` /
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` behave as everywhere else. Other URLs are
downloaded once into ``$TORCH_HOME/recycle_distill`` (``refresh=True`` downloads again).
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Union
from urllib.parse import urlparse

from recycle_distill import families
from recycle_distill.util.messages import plain

logger = logging.getLogger(__name__)

__all__ = ["fetch_checkpoint", "released_checkpoint", "is_url"]


def is_url(ckpt: Union[str, os.PathLike, None]) -> bool:
    return isinstance(ckpt, str) and ckpt.startswith(("http://", "https://", "hf://"))


def released_checkpoint(name: str, refresh: bool = False) -> str:
    """Local path of a published checkpoint (a row of :data:`recycle_distill.families.RELEASES`),
    downloading it through huggingface_hub if needed."""
    from huggingface_hub import hf_hub_download

    entry = families.RELEASES[name]
    logger.info("fetching %s from the Hugging Face Hub repo %s", entry.filename, families.HF_REPO)
    return hf_hub_download(repo_id=families.HF_REPO, filename=entry.filename, force_download=refresh)


def fetch_checkpoint(ckpt: Union[str, os.PathLike], refresh: bool = False) -> str:
    """Turn ``ckpt`` (path, ``hf://repo/file``, Hub ``resolve`` URL or plain URL) into a local path."""
    if not is_url(ckpt):
        path = os.path.expanduser(os.fspath(ckpt))
        # A folder is a Hugging Face export (recycle-distill export --format hf).
        if not os.path.isfile(path) and not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint not found: {plain(path)}")
        return path
    assert isinstance(ckpt, str)
    hub_file = _hub_location(ckpt)
    if hub_file is not None:
        from huggingface_hub import hf_hub_download

        repo_id, filename, revision = hub_file
        return hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, force_download=refresh)
    return _download_url(ckpt, refresh)


def _hub_location(url: str) -> Union[tuple[str, str, str | None], None]:
    """(repo_id, filename, revision) for ``hf://owner/repo/path`` or ``https://huggingface.co/owner/repo/resolve/rev/path``."""
    if url.startswith("hf://"):
        parts = url[len("hf://"):].split("/")
        if len(parts) < 3:
            raise ValueError(f"expected hf://owner/repo/file, got {plain(url)}")
        return "/".join(parts[:2]), "/".join(parts[2:]), None
    parsed = urlparse(url)
    if parsed.netloc == "huggingface.co":
        parts = parsed.path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return "/".join(parts[:2]), "/".join(parts[4:]), parts[3]
    return None


def _download_url(url: str, refresh: bool) -> str:
    import torch.hub

    folder = os.path.join(torch.hub.get_dir(), "recycle_distill")
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(urlparse(url).path) or "checkpoint"
    path = os.path.join(folder, f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}")
    if refresh or not os.path.isfile(path):
        logger.info("downloading %s -> %s", url, path)
        # download_url_to_file writes to a temp file and renames: no half files in the cache.
        torch.hub.download_url_to_file(url, path, progress=True)
    return path
