"""Recognising an S3PRL tree: a git checkout root or an installed ``s3prl`` package directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import RefusedError


@dataclass
class Tree:
    """An S3PRL tree: ``root`` as given, ``package`` is the folder holding hub.py."""

    root: Path
    package: Path
    checkout: bool  # a git checkout root (else an installed package directory)

    @property
    def downstream(self) -> Path:
        """The folder holding the downstream tasks."""
        return self.package / "downstream"

    def label(self, path: Path) -> str:
        """``path`` relative to the root for messages and diffs."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def locate_tree(root: Path) -> Tree:
    """Recognise an S3PRL checkout root or an installed s3prl package directory.

    Raises RefusedError naming what is missing.
    """
    if not root.exists():
        raise RefusedError(f"{root} does not exist")
    if not root.is_dir():
        raise RefusedError(f"{root} is not a directory")
    root = root.resolve()
    for package, checkout in ((root / "s3prl", True), (root, False)):
        if (package / "hub.py").is_file() and (package / "downstream").is_dir():
            return Tree(root, package, checkout)

    def missing(prefix: str) -> str:
        """The required entries absent under root/prefix, e.g. 's3prl/hub.py'."""
        names = []
        if not (root / prefix / "hub.py").is_file():
            names.append(f"{prefix}hub.py")
        if not (root / prefix / "downstream").is_dir():
            names.append(f"{prefix}downstream/")
        return " and ".join(names)

    raise RefusedError(
        f"{root} is not an S3PRL tree: missing {missing('s3prl/')} (for a git checkout "
        f"root), and missing {missing('')} (for an installed s3prl package directory)")
