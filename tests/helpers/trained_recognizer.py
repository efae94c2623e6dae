"""A trained ``cif_asr`` experiment folder, built once per test session.

:func:`trained_digits_experiment` speaks 8 random digit strings with espeak-ng (as the "it
learns" test does), runs them through the tiny released-format ARMHuBERT test student and
S3PRL's own ``Featurizer`` (the path ``run_downstream.py`` takes, so the features the recognizer
is trained on are the ones a transcriber rebuilding the experiment computes), trains the small
CIF recognizer on them, and saves the folder the way S3PRL's runner does: ``dev-best.ckpt``
(``Args`` namespace, ``Config`` dict, ``Featurizer`` and ``Downstream`` state dicts, ``Step``,
``Epoch``, ``Optimizer``) and the expert's ``vocab.json``.

Training stops as soon as greedy beam search reproduces every transcript (checked every
``CHECK_EVERY`` steps, at most ``MAX_STEPS``), so the experiment is known to transcribe its own
utterances exactly; the checkpoint is the model at that step.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recycle_distill.downstreams.cif_asr.config import DecodeConfig, LossConfig, ModelConfig
from recycle_distill.downstreams.cif_asr.model import CifRecognizer
from recycle_distill.downstreams.cif_asr.text import EOS, PAD, SPECIALS, UnitVocabulary
from recycle_distill.training.data.synth import speak

from helpers.superb_data import tiny_checkpoint

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The "it learns" test's recognizer (docs/cif.md structure, narrow, one layer per stack).
MODEL = dict(d_model=96, conformer_layers=1, conformer_ffn=192, conformer_kernel=7, predictor_channels=96,
             decoder_ffn=192)
DECODE = dict(beam_size=10, tail_threshold=0.4, max_steps=1000)
LR = 3e-3
MAX_STEPS = 300
CHECK_EVERY = 20
SEED = 0

_CACHE: dict = {}


def random_texts(count: int = 8, seed: int = SEED) -> list[str]:
    """Random 4-6 word digit strings: no prefix predicts the next word."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 7)))) for _ in range(count)]


def digits_vocabulary() -> UnitVocabulary:
    """The specials, then the ten digit words (language-model ids 5..14, as a tiny BERT's would be)."""
    pad, unk, cls, sep = 0, 1, 2, 3
    return UnitVocabulary(units=[*SPECIALS, *WORDS], lm_ids=[pad, pad, cls, sep, unk, *range(5, 5 + len(WORDS))],
                          language="en", fingerprint="tiny-digits")


def _args(expdir: Path, ckpt: Path, config: Path) -> argparse.Namespace:
    """The ``run_downstream.py`` namespace of ``-m train -d cif_asr -u armhubert -k CKPT -g CONFIG``."""
    return argparse.Namespace(
        mode="train", downstream="cif_asr", downstream_variant=None, upstream="armhubert",
        upstream_ckpt=str(ckpt), upstream_model_config=str(config), upstream_refresh=False,
        upstream_trainable=False, upstream_feature_selection="hidden_states", upstream_layer_selection=None,
        upstream_feature_normalize=False, upstream_model_name="model.pt", upstream_revision=None,
        from_hf_hub=False, hub="torch", expdir=str(expdir), expname=expdir.name, auto_resume=False,
        init_ckpt=None, device="cpu", seed=1337, config="cif_asr.yaml", verbose=False, disable_cudnn=False,
        override=None, evaluate_split="test", backend="nccl", local_rank=None, push_to_hf_hub=False,
        hf_hub_org="None", past_exp=None)


def _config(corpus_root: Path) -> dict:
    return {
        "runner": {"total_steps": MAX_STEPS, "eval_dataloaders": ["dev"]},
        "downstream_expert": {
            "corpus": {"name": "librispeech", "root": str(corpus_root)},
            "lm": {"path": str(corpus_root / "bert")},
            "data": {"batch_size": 8, "num_workers": 0},
            "model": dict(MODEL), "loss": {}, "decode": dict(DECODE),
        },
    }


@torch.no_grad()
def _features(upstream, featurizer, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) zero-padded featurizer output of each utterance alone, (B,) lengths."""
    feats = [featurizer([wave], upstream([wave]))[0] for wave in waves]
    lengths = torch.tensor([len(f) for f in feats])
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths


def _train(features, lengths, targets, target_lengths, upstream_rate: int, vocab_size: int, texts, vocab):
    """Train until beam search gives every transcript back; returns (model, steps)."""
    torch.manual_seed(SEED)
    model = CifRecognizer(ModelConfig(**MODEL), LossConfig(), features.shape[-1], upstream_rate, vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for step in range(1, MAX_STEPS + 1):
        model.train()
        out = model(features, lengths, targets, target_lengths)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % CHECK_EVERY == 0:
            model.eval()
            hypotheses = model.decode(features, lengths, DecodeConfig(**DECODE))
            if [vocab.text(vocab.decode(h)) for h in hypotheses] == texts:
                return model, step
    raise AssertionError(f"the digits recognizer did not learn its {len(texts)} transcripts in {MAX_STEPS} steps")


def _build(root: Path) -> tuple[Path, list[torch.Tensor], list[str]]:
    from recycle_distill.s3prl.compat import apply_compat
    from recycle_distill.s3prl.superb.launcher import hub_entries

    apply_compat()
    from s3prl.upstream.interfaces import Featurizer

    texts = random_texts()
    waves = [torch.from_numpy(speak(text, "en-us")) for text in texts]
    ckpt, config = tiny_checkpoint(root / "upstream", "armhubert")
    upstream = hub_entries()["armhubert"](ckpt=str(ckpt), model_config=str(config)).eval()
    featurizer = Featurizer(upstream, "hidden_states", upstream_device="cpu").eval()
    features, lengths = _features(upstream, featurizer, waves)
    vocab = digits_vocabulary()
    seqs = [torch.tensor(vocab.encode(text.split()) + [EOS]) for text in texts]
    targets = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=PAD)
    target_lengths = torch.tensor([len(s) for s in seqs])
    model, steps = _train(features, lengths, targets, target_lengths, featurizer.downsample_rate, len(vocab),
                          texts, vocab)

    expdir = root / "expdir"
    expdir.mkdir()
    vocab.save(expdir)
    downstream = {f"model.{key}": value for key, value in model.state_dict().items()}
    downstream["unit_lm_ids"] = torch.tensor(vocab.lm_ids, dtype=torch.long)
    downstream["best_error"] = torch.tensor(0.0)
    states = {"Optimizer": {}, "Step": steps, "Epoch": 0, "Args": _args(expdir, ckpt, config),
              "Config": _config(root / "corpus"), "Featurizer": featurizer.state_dict(), "Downstream": downstream}
    torch.save(states, expdir / "dev-best.ckpt")
    return expdir, waves, texts


def trained_digits_experiment(tmp_path_factory) -> tuple[Path, list[torch.Tensor], list[str]]:
    """(expdir holding ``dev-best.ckpt`` and ``vocab.json``, the 8 16 kHz waveforms (S,), their texts).

    Built once per session (later calls return the same folder); skips loudly without espeak-ng.
    Training runs single-threaded (two threads on two busy cores ran slower) and takes about a
    minute.
    """
    if shutil.which("espeak-ng") is None:
        pytest.skip("SKIPPED LOUDLY: espeak-ng is not installed (apt-get install -y espeak-ng): "
                    "no speech to learn from")
    if "digits" not in _CACHE:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _CACHE["digits"] = _build(tmp_path_factory.mktemp("trained_digits"))
        finally:
            torch.set_num_threads(threads)
    expdir, waves, texts = _CACHE["digits"]
    return expdir, [wave.clone() for wave in waves], list(texts)
