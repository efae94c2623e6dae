"""Copy the reference loss fixtures into tests/data/loss, keeping only the fields the tests use.

Dropped: the raw waveforms, the teacher's pre-residual ``layer_results_lr`` and its other
outputs, the student's intermediate tensors, ``grads_named`` (a subset of ``grads``, checked
equal here before it is dropped) and the long provenance strings of ``meta``.

Usage: python tools/trim_loss_fixtures.py ../shared/reference/loss tests/data/loss
"""

from __future__ import annotations

import logging
import pathlib
import sys

import torch

logger = logging.getLogger("trim_loss_fixtures")

META_KEYS = ("family", "variant", "crop_seq_to_multiple", "reference_commit", "teacher_checkpoint_sha256")
TRAIN_KEYS = ("rec_loss_weight", "random_layer_weight", "distil_random_layer", "rec_loss_type")


def trim(data: dict) -> dict:
    kept = {k: data[k] for k in ("config", "rand_l", "state_dict", "x", "padding_mask") if k in data}
    kept["train_cfg"] = {k: data["train_cfg"][k] for k in TRAIN_KEYS}
    kept["meta"] = {k: data["meta"][k] for k in META_KEYS if k in data["meta"]}
    kept["val"] = {
        "v_loss": data["val"]["v_loss"],
        "student": {"projections": data["val"]["student"]["projections"]},
        "teacher": {"layer_results_x": data["val"]["teacher"]["layer_results_x"]},
    }
    if "losses" not in data:  # the narrow fixture: the original's training step failed there
        return kept
    for name, value in data.get("grads_named", {}).items():
        if not torch.equal(value, data["grads"][name]):
            raise ValueError(f"grads_named[{name}] differs from grads[{name}]")
    kept.update({k: data[k] for k in ("mask_indices", "losses", "total_loss", "grads")})
    for run in ("teacher_masked", "teacher_unmasked"):
        kept[run] = {"layer_results_x": data[run]["layer_results_x"]}
    kept["student"] = {"projections": data["student"]["projections"]}
    # The validation teacher run is the unmasked one (the teacher is in eval mode in both):
    # share the tensors so torch.save stores them once.
    unmasked = kept["teacher_unmasked"]["layer_results_x"]
    if all(torch.equal(a, b) for a, b in zip(kept["val"]["teacher"]["layer_results_x"], unmasked)):
        kept["val"]["teacher"]["layer_results_x"] = unmasked
    return kept


def main(source: str, target: str) -> None:
    pathlib.Path(target).mkdir(parents=True, exist_ok=True)
    for path in sorted(pathlib.Path(source).glob("*.pt")):
        kept = trim(torch.load(path, weights_only=True))
        torch.save(kept, pathlib.Path(target) / path.name)
        logger.info("%s: kept %s", path.name, sorted(kept))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1], sys.argv[2])
