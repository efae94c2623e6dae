"""``train.blocks``: the student trains through the map-free reuse layer by default, with the same
losses as the stored-map (plain) blocks, and a wrong value is refused in one line."""

from __future__ import annotations

import pytest

from recycle_distill.students.config import ConfigError
from recycle_distill.training import load_train_config

from helpers.train_helpers import metrics, run_cli, synthetic_train_corpus, tiny_config, write_config

NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0}


def test_the_default_is_map_free_and_a_wrong_value_is_refused(tmp_path):
    config = tiny_config(tmp_path / "LibriSpeech", tmp_path / "run")
    path = write_config(tmp_path / "conf.yaml", config)
    assert load_train_config(str(path)).train.blocks == "map_free"
    config["train"]["blocks"] = "fast"
    with pytest.raises(ConfigError, match=r"^train\.blocks: map_free or plain, got 'fast'$"):
        load_train_config(str(write_config(tmp_path / "bad.yaml", config)))


@pytest.mark.slow
def test_map_free_and_stored_map_training_give_the_same_losses(tmp_path):
    # ARMHuBERT's reusing layers read the previous layer's map: stored (plain) or recomputed
    # (map_free). Without dropout both are the same function, so six steps of AdamW from the
    # same seed must give the same losses up to float32 rounding of the two summation orders.
    corpus = synthetic_train_corpus(tmp_path / "corpus", utterances_per_speaker=4)
    losses = {}
    for blocks in ("plain", "map_free"):
        output = tmp_path / blocks
        config = tiny_config(corpus, output, train={"blocks": blocks, "max_steps": 6}, distiller=NO_DROPOUT)
        result = run_cli(["-c", str(write_config(tmp_path / f"{blocks}.yaml", config))])
        assert result.returncode == 0, result.stderr[-3000:]
        losses[blocks] = [record["loss"] for record in metrics(output)]
        assert f"train.blocks {blocks}: " in result.stderr
        assert (f"train.blocks {blocks}: 0 " in result.stderr) == (blocks == "plain"), result.stderr[-2000:]
    assert len(losses["plain"]) == 6
    for step, (stored, recomputed) in enumerate(zip(losses["plain"], losses["map_free"]), 1):
        assert recomputed == pytest.approx(stored, rel=1e-4), f"step {step}"
