"""What the docs promise and nothing else pins: the recipes table (docs/training.md) and the checkpoint
loading rules (docs/usage.md)."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

from recycle_distill.checkpoint import CheckpointError
from recycle_distill.training import list_recipes, load_train_config

from conftest import load_fixture, write_lightning_checkpoint

TRAINING_DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "training.md"


def recipe_rows() -> dict[str, dict[str, str]]:
    """The recipes table of docs/training.md: recipe -> {column: cell}."""
    text = TRAINING_DOC.read_text()
    table = text[text.index("## Recipes (`recycle_distill/training/recipes/`)"):].split("\n\n")[1]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        rows[cells["recipe"].strip("`")] = cells
    return rows


def test_the_table_lists_every_shipped_recipe():
    assert sorted(recipe_rows()) == list_recipes()


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_hyperparameters_match_the_readme_table(name):
    row = recipe_rows()[name]
    config = load_train_config(name)
    objective = row["objective"]
    if match := re.search(r"\blr ([0-9.e-]+)", objective):
        assert config.optimizer.lr == float(match.group(1))
    if match := re.search(r"mask_prob ([0-9.]+)", objective):
        assert config.teacher.mask_prob == float(match.group(1))
    if match := re.search(r"(\d+) ep\b", objective):
        assert (config.train.num_epochs, config.train.max_steps) == (int(match.group(1)), 0)
    if match := re.search(r"batch (\d+) x (\d+)", objective):
        assert (config.train.batch_size, config.train.accumulate_grad_batches) == tuple(map(int, match.groups()))
    expected_objective = {"masking": "masking", "STaR": "star", "hints": "fithubert"}[objective.split()[0].strip(",")]
    assert config.objective == expected_objective
    expected_sets = {"LS 960h": ["train-clean-100", "train-clean-360", "train-other-500"], "LS 100h": ["train-clean-100"]}
    assert config.data.train_set == expected_sets[row["data"]]
    # The paragraph under the table: AdamW 0.9/0.98, eps 1e-6, weight decay 1e-6, 5 % warmup,
    # 2 GPUs, all 11 lower layers as hints.
    assert (list(config.optimizer.betas), config.optimizer.eps, config.optimizer.weight_decay,
            config.optimizer.warmup_proportion) == ([0.9, 0.98], 1e-6, 1e-6, 0.05)
    assert config.train.gpus == 2 and config.train.distil_random_layer == 11


@pytest.mark.parametrize("name", [n for n in list_recipes() if "-100" not in n])
def test_960h_recipes_use_the_papers_batches(name):
    """docs/training.md: 'per-GPU batch x accumulation x 2 GPUs as in the papers (18 x 4 x 2 for the 960h
    recipes; FitHuBERT's paper uses 3 x 4 x 2)'."""
    config = load_train_config(name)
    expected = (3, 4, 2) if name == "fithubert" else (18, 4, 2)
    assert (config.train.batch_size, config.train.accumulate_grad_batches, config.train.gpus) == expected


# ------------------------------------------------------------------ loading rules (docs/usage.md "Checkpoints", "torch.hub ...")
def _hubconf(family: str):
    return importlib.import_module(f"recycle_distill.upstreams.{family}.hubconf")


def test_a_checkpoint_without_config_matching_no_preset_is_refused(tmp_path):
    from recycle_distill.checkpoint import load_student

    fixture = load_fixture("golden_tiny_armhubert.pt")
    ckpt = write_lightning_checkpoint(tmp_path / "tiny.ckpt", fixture["state_dict"])
    with pytest.raises(CheckpointError, match=r"weights match no armhubert preset; pass the architecture YAML "
                                              r"\(-g / model_config\)"):
        load_student(ckpt, "armhubert")


@pytest.mark.parametrize("family, release", [("armhubert", "armhubert_960h"), ("maskhubert", "maskhubert_960h")])
def test_bare_entry_without_checkpoint_fetches_the_960h_release(family, release, monkeypatch):
    fetched = []
    monkeypatch.setattr("recycle_distill.s3prl.hub_entries.load_released",
                        lambda name, *args, **kwargs: fetched.append(name) or "upstream")
    assert getattr(_hubconf(family), family)() == "upstream"
    assert fetched == [release]


@pytest.mark.parametrize("family", ["starhubert", "fithubert"])
def test_entries_without_a_release_say_what_to_pass(family, monkeypatch):
    monkeypatch.setattr("recycle_distill.s3prl.hub_entries.load_released", lambda *a, **k: pytest.fail("nothing to fetch"))
    with pytest.raises(ValueError, match=rf"^{family}: no checkpoint given \(-k / ckpt=\) and none is published"):
        getattr(_hubconf(family), family)()
