"""Register the recycle-distill upstreams in S3PRL and apply the SUPERB config tweaks.

This is the library behind ``patch_hub.py`` at the repository root (run that script; see its
docstring for the usage).  ``<s3prl root>`` is either a git checkout of S3PRL (recognised by
``s3prl/hub.py`` and ``s3prl/downstream/``) or an installed ``s3prl`` package directory such
as ``site-packages/s3prl`` (recognised by ``hub.py`` and ``downstream/``).  A pip-installed
S3PRL ships no downstream configs; use the pre-patched ones in ``downstream_configs/``.

What it does:

* appends a marked block to ``hub.py`` that imports the hubconf of every student family
  (armhubert, maskhubert, starhubert, fithubert) from the installed
  ``recycle_distill.upstreams`` package, or, with ``--copy``, copies ``upstreams/<family>``
  from this repository into ``s3prl/upstream/<family>`` and imports it from there, the way
  S3PRL's own hub.py imports its upstreams (registration.py);
* appends a marked block to ``downstream/runner.py`` that allow-lists, for torch's weights-only
  loads, the plain-data classes S3PRL's own ``states-*.ckpt`` pickle (``argparse.Namespace``), so
  ``run_downstream.py -m evaluate -e`` and resuming with ``-e`` work on torch >= 2.6, and one to
  ``schedulers.py`` that imports ``get_tri_stage_schedule``, so a config's
  ``scheduler: {name: tri_stage_schedule}`` works (inserts.py);
* uncomments the learning-rate scheduler block in the PR, KS, IC, SID, ER, ASR, SF and ASV
  configs and raises the SID learning rate from 1.0e-4 to 1.0e-3 (QbE and SD are unchanged)
  (base.py: the task table; configs.py);
* in a git checkout, creates ``s3prl/downstream/<name>/`` for each downstream of
  ``recycle_distill/downstreams/`` (found by ``recycle_distill.downstreams.available()``; today
  ``cif_asr``, the CIF-HieraDist recognizer), whose ``expert.py`` re-exports that downstream's
  ``DownstreamExpert`` (registration.py); an installed s3prl gets no files,
  ``recycle-distill superb -d <name>`` registers it at run time.

Every file it changes is backed up once as ``<file>.recycle-distill.orig``; copied and created
folders are recorded in ``.recycle-distill-manifest.json`` next to ``hub.py`` (runs.py),
and only entries that name our own folders inside the tree are ever trusted.
A run holds an exclusive lock on the tree from the first read to the last write (runs.py).
Files whose content is neither the expected original nor our patched version are reported and
left alone.  A run is planned in full (plan.py, runs.py) before anything is written.

Every target is resolved first, symlinks followed, and a run that would read, write, back up or
remove anything outside the tree given is refused before the first write (runs.py).  A patch
writes the manifest, recording every change, before making the first one, and a revert rewrites
it only after its own, so a run stopped part way (a full disk, an immutable file) never leaves a
tree that ``--revert`` cannot restore byte for byte (plan.py).

Exit status: 0 when everything is in the wanted state, 1 when some file was left alone
(see the warnings), 2 when the tree was refused, 3 when a write failed part way.

Needs only the standard library and PyYAML: nothing here may import torch, so that
``patch_hub.py`` runs with the Python that runs S3PRL's scripts, or any other.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

from recycle_distill.s3prl.patch.base import (
    BACKUP_SUFFIX,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_WARNINGS,
    TASKS,
    PatchError,
    RefusedError,
    TaskTweak,
    Tree,
    WriteFailed,
    atomic_write,
    backup_path,
    format_lr,
    locate_tree,
    tree_hashes,
)
from recycle_distill.s3prl.patch.configs import (
    check_tweaked,
    patch_config_text,
    set_optimizer_lr,
    uncomment_scheduler,
)
from recycle_distill.s3prl.patch.plan import Plan, Write, apply, show_diff, unified_diff
from recycle_distill.s3prl.patch.registration import (
    FAMILIES,
    HUB_BEGIN,
    HUB_END,
    add_hub_block,
    find_hub_block,
    hub_block,
    remove_hub_block,
)
from recycle_distill.s3prl.patch.runs import MANIFEST_NAME, plan_patch, plan_revert


def default_upstreams_dir() -> Path:
    """Where the S3PRL upstream folders are: the installed ``recycle_distill.upstreams``
    package (found without importing it), else a checkout's top-level ``upstreams/`` (when
    patch_hub.py runs from a checkout with a Python that has not installed the package)."""
    spec = importlib.util.find_spec("recycle_distill.upstreams")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[3] / "upstreams"


def default_configs_dir() -> Path:
    """The pre-patched SUPERB configs shipped in the package (what a pip-installed s3prl uses)."""
    return Path(str(resources.files("recycle_distill.s3prl") / "downstream_configs"))

__all__ = [
    "BACKUP_SUFFIX", "EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "EXIT_WARNINGS",
    "FAMILIES", "HUB_BEGIN", "HUB_END", "MANIFEST_NAME", "TASKS",
    "PatchError", "Plan", "RefusedError", "TaskTweak", "Tree", "Write", "WriteFailed",
    "add_hub_block", "apply", "default_configs_dir", "default_upstreams_dir", "atomic_write", "backup_path", "check_tweaked", "find_hub_block",
    "format_lr", "hub_block", "locate_tree", "patch_config_text", "plan_patch",
    "plan_revert", "remove_hub_block", "set_optimizer_lr", "show_diff", "tree_hashes",
    "uncomment_scheduler", "unified_diff",
]
