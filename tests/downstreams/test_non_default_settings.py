"""cif_asr settings away from their defaults: each reaches the code it configures, every number
key refuses a bool, and the bucketing limit is inclusive.

Tests that run with the defaults cannot see a setting that is parsed and then ignored (the
default is what the code would use anyway); here each value differs from its default."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from recycle_distill.downstreams.cif_asr.config import (
    CifAsrConfig,
    ConfigError,
    CorpusSettings,
    DataSettings,
    DecodeConfig,
    ExpertSettings,
    LanguageModelSettings,
    LossConfig,
    ModelConfig,
    SpecAugmentSettings,
)
from recycle_distill.downstreams.cif_asr.hieradist import acoustic_contrastive_loss
from recycle_distill.downstreams.cif_asr.model import CifRecognizer
from recycle_distill.downstreams.cif_asr.sampler import DurationSortedBatchSampler

SMALL = dict(d_model=16, conformer_stacks=1, conformer_layers=1, conformer_heads=2, conformer_ffn=32,
             conformer_kernel=3, predictor_channels=16, decoder_layers=1, decoder_heads=2, decoder_ffn=32)
VOCAB, LM_DIM = 9, 12


@pytest.mark.parametrize("changes", [{"acd_temperature": 0.5}, {"acd_negatives": 3},
                                     {"acd_temperature": 0.003, "acd_negatives": 5}])
def test_the_acd_term_uses_the_configured_temperature_and_negatives(changes):
    loss_cfg = LossConfig.from_dict({"acd": 1.0, **changes})
    wanted = dataclasses.replace(LossConfig(acd=1.0), **changes)
    assert loss_cfg == wanted and wanted != LossConfig(acd=1.0)  # parsed, and really non-default
    torch.manual_seed(0)
    model = CifRecognizer(ModelConfig(**SMALL), loss_cfg, upstream_dim=8, upstream_rate=320, vocab_size=VOCAB,
                          lm_dim=LM_DIM).eval()
    features = torch.randn(2, 40, 8)
    targets = torch.tensor([[4, 5, 6, 7, 3], [8, 4, 3, 1, 1]])
    target_lengths = torch.tensor([5, 3])
    lm_vectors = torch.randn(2, 5, LM_DIM)
    projected = []
    model.acd_proj.register_forward_hook(lambda module, inputs, output: projected.append(output))
    out = model(features, torch.tensor([40, 31]), targets, target_lengths, lm_vectors,
                generator=torch.Generator().manual_seed(7))
    valid = torch.arange(5)[None, :] < target_lengths[:, None]
    expected, _ = acoustic_contrastive_loss(
        projected[0][valid], lm_vectors[valid], num_negatives=wanted.acd_negatives,
        temperature=wanted.acd_temperature, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out.terms["acd"], expected, rtol=1e-6, atol=1e-6)
    default, _ = acoustic_contrastive_loss(projected[0][valid], lm_vectors[valid],
                                           generator=torch.Generator().manual_seed(7))
    assert abs(float(default) - float(expected)) > 1e-3 * abs(float(expected))  # the settings matter here


SECTIONS = {"corpus": CorpusSettings, "lm": LanguageModelSettings, "data": DataSettings,
            "spec_augment": SpecAugmentSettings, "model": ModelConfig, "loss": LossConfig, "decode": DecodeConfig}


def number_keys():
    """(section, key, annotation) of every int or float key of the cif_asr config sections."""
    assert sorted(SECTIONS) == sorted(ExpertSettings.SECTIONS)  # a new section is covered too
    for section, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            if field.type in ("int", "float", "Optional[int]", "Optional[float]"):
                yield section, field.name, field.type


NUMBER_KEYS = sorted(number_keys())


def test_the_number_keys_are_found():
    keys = {(section, key) for section, key, _ in NUMBER_KEYS}
    assert {("loss", "acd_temperature"), ("data", "max_seconds"), ("model", "cif_threshold"),
            ("spec_augment", "max_time_ratio"), ("lm", "batch_size")} <= keys
    assert len(keys) >= 30


@pytest.mark.parametrize("section, key, annotation", NUMBER_KEYS, ids=[f"{s}.{k}" for s, k, _ in NUMBER_KEYS])
@pytest.mark.parametrize("flag", [True, False])
def test_every_number_key_refuses_a_bool(section, key, annotation, flag):
    base = {"corpus": {"root": "/r"}, "lm": {"path": "/p"}}
    data = {**base, section: {**base.get(section, {}), key: flag}}
    prefix = "downstream_expert." if section not in CifAsrConfig.SECTIONS else ""
    with pytest.raises(ConfigError, match=rf"^{prefix}{section}\.{key}: .*, got {flag}$"):
        ExpertSettings.from_dict(data)


def test_a_batch_may_hold_exactly_max_seconds(caplog):
    """Durations are exact binary fractions, so the sums are exact: 2.5 + 2.5 == 5.0."""
    durations = [2.5, 2.5, 2.5, 2.5, 5.0, 2.5, 2.25]
    with caplog.at_level(logging.WARNING):
        sampler = DurationSortedBatchSampler(durations, batch_size=10, max_seconds=5.0, shuffle=False)
    assert "longer than max_seconds" not in caplog.text  # 5.0 s alone is not too long
    # Sorted: 2.25, 2.5 x 5, 5.0; batches fill up to exactly 5.0 s, never past it.
    assert sampler.batches(0) == [[6, 0], [1, 2], [3, 5], [4]]
    over = DurationSortedBatchSampler([5.0, 5.25, 1.0], batch_size=10, max_seconds=5.0, shuffle=False)
    assert over.batches(0) == [[2], [0], [1]]
