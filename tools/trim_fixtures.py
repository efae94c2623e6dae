"""Copy the reference fixtures into tests/data, keeping only the fields the tests assert on.

Usage: python tools/trim_fixtures.py ../shared/reference/fixtures tests/data/fixtures
"""

import pathlib
import sys

import torch

MODEL_KEYS = ("x", "padding_mask", "layer_results", "projections")


def trim_outputs(outputs: dict) -> dict:
    kept = {k: outputs[k] for k in ("last_hidden_state", "hidden_states", "debug_full_layer_attention_probs") if k in outputs}
    kept["model"] = {k: outputs["model"][k] for k in MODEL_KEYS if k in outputs["model"]}
    if "single" in outputs:
        kept["single"] = [trim_outputs(single) for single in outputs["single"]]
    return kept


def main(source: str, target: str) -> None:
    pathlib.Path(target).mkdir(parents=True, exist_ok=True)
    for path in sorted(pathlib.Path(source).glob("*.pt")):
        data = torch.load(path, weights_only=True)
        kept = {k: data[k] for k in ("config", "state_dict", "wavs", "meta") if k in data}
        if "outputs" in data:
            kept["outputs"] = trim_outputs(data["outputs"])
        if "outputs_masked" in data:
            masked = data["outputs_masked"]
            kept["outputs_masked"] = {
                "mask_indices": masked["mask_indices"],
                "model": {k: masked["model"][k] for k in MODEL_KEYS if k in masked["model"]},
            }
        torch.save(kept, pathlib.Path(target) / path.name)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
