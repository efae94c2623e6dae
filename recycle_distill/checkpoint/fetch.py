"""Where checkpoints come from: local paths, URLs, and the published files on the Hugging Face Hub.

Hub downloads go through the real ``huggingface_hub`` client, so its cache, ``HF_HOME`` /
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` behave as everywhere else. Other URLs are
downloaded once into ``$TORCH_HOME/recycle_distill`` (``refresh=True`` downloads again).

A published checkpoint is fetched only after one request shows the Hub answering: offline,
``huggingface_hub`` would retry about 25 s and end in a generic error, so instead a cached copy is
used at once, or :class:`ReleaseUnavailable` says in one line what could not be fetched and how to
go on without it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Union
from urllib.parse import urlparse

from recycle_distill import families
from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.util.messages import plain

logger = logging.getLogger(__name__)

__all__ = ["ReleaseUnavailable", "fetch_checkpoint", "released_checkpoint", "is_url"]


class ReleaseUnavailable(CheckpointError):
    """A published checkpoint could not be fetched (no network, or HF_HUB_OFFLINE and not cached)."""


def is_url(ckpt: Union[str, os.PathLike, None]) -> bool:
    return isinstance(ckpt, str) and ckpt.startswith(("http://", "https://", "hf://"))


def released_checkpoint(name: str, refresh: bool = False, default_of: Union[str, None] = None) -> str:
    """Local path of a published checkpoint (a row of :data:`recycle_distill.families.RELEASES`),
    downloading it through huggingface_hub if needed.

    Raises ReleaseUnavailable, fast, when the Hub does not answer and the file is not cached (or
    ``HF_HUB_OFFLINE`` is set and it is not cached); ``default_of``: the family whose entry loads
    this release when given no checkpoint (the message says so).
    """
    from huggingface_hub import constants, hf_hub_download, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    entry = families.RELEASES[name]
    cached = try_to_load_from_cache(families.HF_REPO, entry.filename)
    cached = cached if isinstance(cached, str) and not refresh else None
    if constants.HF_HUB_OFFLINE:
        try:
            return hf_hub_download(repo_id=families.HF_REPO, filename=entry.filename, local_files_only=True)
        except LocalEntryNotFoundError:
            raise _unavailable(entry, "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache",
                               default_of) from None
    unreachable = _hub_unreachable(hf_hub_url(families.HF_REPO, entry.filename), constants.HF_HUB_ETAG_TIMEOUT)
    if unreachable is not None:
        if cached is not None:
            logger.warning("the Hugging Face Hub does not answer (%s); using the cached %s", unreachable, cached)
            return cached
        raise _unavailable(entry, f"the Hugging Face Hub does not answer: {unreachable}", default_of)
    logger.info("fetching %s from the Hugging Face Hub repo %s", entry.filename, families.HF_REPO)
    return hf_hub_download(repo_id=families.HF_REPO, filename=entry.filename, force_download=refresh)


def _hub_unreachable(url: str, timeout: float) -> Union[str, None]:
    """Why ``url`` cannot be reached (one line), or None when the Hub answers at all.

    One HEAD request through huggingface_hub's own session (its proxies and certificates), no
    retries and no redirect followed: any HTTP status means the Hub is there, and whether the file
    is served is then hf_hub_download's to say.
    """
    import requests
    from huggingface_hub.utils import get_session

    try:
        get_session().head(url, timeout=timeout, allow_redirects=False)
    except (requests.ConnectionError, requests.Timeout) as err:
        reason = getattr(err, "args", [None])[0]
        return plain(f"{type(err).__name__} on {url}" + (f" ({_root_cause(reason)})" if reason else ""), 300)
    return None


def _root_cause(error: object) -> str:
    """The innermost reason urllib3 gives (``Connection refused``), not its whole retry chain."""
    while getattr(error, "reason", None) is not None:
        error = error.reason  # type: ignore[attr-defined]
    text = str(error)
    return text.rsplit(": ", 1)[-1] if ": " in text else text


def _unavailable(entry: "families.Release", why: str, default_of: Union[str, None]) -> ReleaseUnavailable:
    """The one-line error for a release that cannot be fetched, with the ways to go on."""
    random = f"{entry.preset}-random.safetensors"
    what = (f"{plain(default_of, 100)}: without a checkpoint it loads the published default {entry.name}, whose file"
            if default_of else f"{entry.name}: the published checkpoint")
    return ReleaseUnavailable(
        f"{what} {entry.filename} ({families.HF_REPO} on the Hugging Face Hub) "
        f"could not be fetched ({why}); continue with ckpt=<a local checkpoint> (S3PRL: -k FILE), with "
        f"HF_HUB_OFFLINE=1 once the file is in the Hugging Face cache, or with random weights: "
        f"recycle-distill export {entry.preset} --format safetensors -o {random}, then ckpt={random}")


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
