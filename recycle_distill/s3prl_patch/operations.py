"""The two runs, patch and revert, planned from the per-target steps.

The order of the steps is the order of the report lines and of the writes, and the manifest
comes last because it records what the other steps leave behind.
"""

from __future__ import annotations

from pathlib import Path

from .configs import plan_configs, plan_revert_configs
from .copies import plan_copies, plan_revert_copies
from .manifest import plan_manifest, read_manifest
from .plan import Plan
from .preflight import plan_stale_temps
from .registration import plan_hub, plan_revert_hub
from .shim import plan_revert_shim, plan_shim
from .tree import Tree


def plan_patch(tree: Tree, copy: bool, upstreams: Path, shipped_configs: Path) -> Plan:
    """Plan registering the upstreams and tweaking the configs.

    ``upstreams`` is the folder ``--copy`` copies the families from; ``shipped_configs`` the
    pre-patched configs the report points to when the tree has none.
    """
    plan = Plan(tree)
    plan_stale_temps(tree, plan)
    manifest = read_manifest(tree, plan)
    copied = (plan_copies(tree, plan, manifest, upstreams) if copy
              else dict(manifest.get("copied") or {}))
    patched = {entry for entry in manifest.get("patched") or [] if isinstance(entry, str)}
    if plan_hub(tree, plan, copy):
        patched.add("hub.py")
    patched |= {f"downstream/{config}" for config in plan_configs(tree, plan, shipped_configs)}
    created = plan_shim(tree, plan, manifest.get("created") or {})
    plan_manifest(tree, plan, patched, copied, created)
    return plan


def plan_revert(tree: Tree) -> Plan:
    """Plan undoing a previous run: restore backups, drop the hub block and the copies."""
    plan = Plan(tree)
    plan_stale_temps(tree, plan)
    manifest = read_manifest(tree, plan)
    left_patched = set()
    if not plan_revert_hub(plan, (tree.package / "hub.py").resolve()):
        left_patched.add("hub.py")
    left_patched |= plan_revert_configs(tree, plan)
    left_copied = plan_revert_copies(tree, plan, manifest)
    left_created = plan_revert_shim(tree, plan, manifest.get("created") or {})
    plan_manifest(tree, plan, left_patched, left_copied, left_created)
    return plan
