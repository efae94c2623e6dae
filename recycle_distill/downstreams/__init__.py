"""S3PRL downstreams shipped with recycle-distill, one self-contained subpackage each.

A downstream is a subpackage ``recycle_distill/downstreams/<name>/`` with an ``expert.py`` that
defines S3PRL's ``DownstreamExpert``. :func:`available` finds them by a folder scan, and both
places that hand them to S3PRL use it, so adding a folder is all it takes (docs/development.md,
"Adding a downstream"):

* ``recycle-distill superb -d <name>`` (:func:`recycle_distill.s3prl.superb.launcher.register_downstreams`)
  makes each importable as ``s3prl.downstream.<name>`` at run time;
* ``patch_hub.py`` (:mod:`recycle_distill.s3prl.patch.registration`) writes a two-file shim
  ``s3prl/downstream/<name>/`` into an S3PRL git checkout, and ``--revert`` removes it.

Imports: a downstream may import only :mod:`recycle_distill.util` and its own subpackage (it
sits below the s3prl, recognizer, training, lab and cli wings and needs no student). This module itself is
standard library only: patch_hub.py calls :func:`available` without torch.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["available"]

EXPERT_FILE = "expert.py"


def available() -> list[str]:
    """Names of the downstreams: the subpackages (folders with an ``__init__.py``) of this
    package's ``__path__`` that hold an ``expert.py``, sorted; nothing is imported.

    Folders whose name is not a Python identifier or starts with ``_`` are skipped: they could not
    be imported as ``s3prl.downstream.<name>``.
    """
    names = set()
    for root in __path__:  # the package's folders; a test may append one
        folder = Path(root)
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            if (child.name.isidentifier() and not child.name.startswith("_")
                    and (child / "__init__.py").is_file() and (child / EXPERT_FILE).is_file()):
                names.add(child.name)
    return sorted(names)
