"""CIF-HieraDist through S3PRL's real ``run_downstream`` on tiny espeak-ng corpora.

- English (LibriSpeech layout, a tiny random BERT with its own WordPiece vocabulary), on a tiny
  released-format ARMHuBERT: the four configurations (plain CIF, + ACD, + LRD, + both), a few
  training steps each, with the dev beam search; HieraDist reads its teacher vectors from a
  ``recycle-distill cif-prepare`` cache, the others compute them on the fly; plain CIF is then
  evaluated on test from its checkpoint.
- Mandarin (AISHELL-1 layout, espeak-ng's ``cmn`` voice, character units) on a tiny MaskHuBERT:
  plain and HieraDist; the HieraDist run goes through a patched S3PRL checkout
  (``patch_hub.py`` writes the ``s3prl/downstream/cif_asr`` shim) where the stack allows it.
Semantics: ``docs/cif.md``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from recycle_distill.s3prl.compat import compat_needed

from helpers.cif_asr_data import make_aishell_corpus, make_librispeech_corpus, write_tiny_bert
from helpers.superb_data import make_s3prl_checkout, run_checked, tiny_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STEPS = 4
TERMS = ("ce", "quantity", "ctc")
DIGITS = "zero one two three four five six seven eight nine".split()
HANZI = "零一二三四五六七八九"
CONFIGS = {"plain": (0.0, 0.0), "acd": (1.0, 0.0), "lrd": (0.0, 0.01), "hieradist": (1.0, 0.01)}
SMALL_MODEL = ["model.d_model=64", "model.conformer_ffn=128", "model.predictor_channels=64", "model.decoder_ffn=128",
               "data.num_workers=0", "data.batch_size=3", "decode.beam_size=3"]


def _texts(symbols, joiner: str, counts: dict, seed: int) -> dict:
    import random

    rng = random.Random(seed)
    return {split: [joiner.join(rng.choice(symbols) for _ in range(4)) for _ in range(n)] for split, n in counts.items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cif_e2e")
    english = make_librispeech_corpus(root / "LibriSpeech", _texts(
        DIGITS, " ", {"train-clean-100": 6, "dev-clean": 2, "test-clean": 2}, seed=0))
    mandarin = make_aishell_corpus(root / "aishell", _texts(HANZI, "", {"train": 6, "dev": 2, "test": 2}, seed=1))
    return {
        "root": root, "english": english, "mandarin": mandarin,
        "bert_en": write_tiny_bert(root / "bert_en", DIGITS + ["##s"]),
        "bert_zh": write_tiny_bert(root / "bert_zh", list(HANZI)),
        "arm": tiny_checkpoint(root / "ckpt", "armhubert"),
        "mask": tiny_checkpoint(root / "ckpt", "maskhubert"),
    }


def _run(command: list, cwd: Path, **env: str) -> str:
    return run_checked(command, cwd, **env).stdout


def _overrides(corpus: list, bert: Path, acd: float, lrd: float, cache: Path | None = None) -> str:
    expert = corpus + [f"lm.path={bert}", f"loss.acd={acd}", f"loss.lrd={lrd}"] + SMALL_MODEL
    if cache is not None:
        expert.append(f"lm.feature_cache={cache}")
    runner = [f"runner.total_steps={STEPS}", "runner.log_step=2", f"runner.eval_step={STEPS}",
              f"runner.save_step={STEPS}", "scheduler.num_warmup_steps=1"]
    return ",,".join([f"config.{item}" for item in runner] + [f"config.downstream_expert.{item}" for item in expert])


def _english(data) -> list:
    return [f"corpus.root={data['english']}"]


def _mandarin(data) -> list:
    return ["corpus.name=aishell", f"corpus.root={data['mandarin']}", "corpus.train=[train]",
            "corpus.dev=[dev]", "corpus.test=[test]"]


def _metrics(text: str, split: str) -> dict:
    """The last ``[cif_asr] <split> step N: key value ...`` line as a dict."""
    lines = re.findall(rf"^\[cif_asr\] {split} step \d+: (.*)$", text, flags=re.MULTILINE)
    assert lines, f"no {split} line in:\n{text[-3000:]}"
    items = lines[-1].split()
    return {items[i]: float(items[i + 1]) for i in range(0, len(items), 2)}


def _check_log(expdir: Path, acd: float, lrd: float) -> None:
    log = (expdir / "superb.log").read_text()
    train, dev = _metrics(log, "train"), _metrics(log, "dev")
    expected = set(TERMS) | ({"acd", "acd_accuracy"} if acd else set()) | ({"lrd"} if lrd else set())
    assert expected <= set(train) and expected <= set(dev), (train, dev)
    assert not ({"acd"} if not acd else set()) & set(train)
    assert "cer" in dev and "wer" in dev and dev["cer"] >= 0
    assert (expdir / f"states-{STEPS}.ckpt").is_file() and (expdir / "vocab.json").is_file()
    assert list(expdir.glob("events.out.tfevents.*"))


def _launcher(*args: str) -> list:
    return [sys.executable, "-m", "recycle_distill", "superb", *args]


def test_english_four_configurations_on_armhubert(data):
    ckpt, config = data["arm"]
    cache = data["root"] / "lm_cache_en"
    prepared = _run([sys.executable, "-m", "recycle_distill", "cif-prepare", "--corpus", "librispeech",
                     "--root", str(data["english"]), "--splits", "train-clean-100", "dev-clean", "test-clean",
                     "--lm", str(data["bert_en"]), "--cache", str(cache)], REPO)
    assert (cache / "index.json").is_file(), prepared
    for name, (acd, lrd) in CONFIGS.items():
        expdir = data["root"] / f"en_{name}"
        _run(_launcher("-m", "train", "-d", "cif_asr", "-u", "armhubert", "-k", str(ckpt), "-g", str(config),
                       "-p", str(expdir), "-o", _overrides(_english(data), data["bert_en"], acd, lrd,
                                                           cache if name == "hieradist" else None)), REPO)
        _check_log(expdir, acd, lrd)
    # Evaluate plain CIF on test from its checkpoint (beam search).
    expdir = data["root"] / "en_plain"
    out = _run(_launcher("-m", "evaluate", "-e", str(expdir / f"states-{STEPS}.ckpt"), "-t", "test"), REPO)
    test = _metrics(out, "test")
    assert {"cer", "wer", "ce", "ctc", "quantity"} <= set(test)
    # Named by the step the checkpoint was trained to (S3PRL hands -m evaluate step 0).
    assert f"[cif_asr] test step {STEPS}: " in out
    assert (expdir / f"test-hyp-{STEPS}.txt").read_text().count("\n") == 2


@pytest.mark.s3prl  # also on the compat stack (through the launcher there); the English run stays on the default stack
def test_mandarin_plain_and_hieradist_on_maskhubert(data, tmp_path):
    ckpt, config = data["mask"]
    expdir = data["root"] / "zh_plain"
    _run(_launcher("-m", "train", "-d", "cif_asr", "-u", "maskhubert", "-k", str(ckpt), "-g", str(config),
                   "-p", str(expdir), "-o", _overrides(_mandarin(data), data["bert_zh"], 0.0, 0.0)), REPO)
    _check_log(expdir, 0.0, 0.0)
    refs = (expdir / f"dev-hyp-{STEPS}.txt").read_text().splitlines()
    assert all(re.search(r"REF [零一二三四五六七八九]{4}$", line) for line in refs), refs

    acd, lrd = CONFIGS["hieradist"]
    expdir = data["root"] / "zh_hieradist"
    overrides = _overrides(_mandarin(data), data["bert_zh"], acd, lrd)
    upstream = ["-u", "maskhubert", "-k", str(ckpt), "-g", str(config)]
    if compat_needed():  # S3PRL's own script cannot import on torchaudio >= 2.9: the launcher instead
        _run(_launcher("-m", "train", "-d", "cif_asr", *upstream, "-p", str(expdir), "-o", overrides), REPO)
    else:
        checkout = make_s3prl_checkout(tmp_path / "checkout")
        _run([sys.executable, str(REPO / "patch_hub.py"), str(checkout)], REPO)
        assert (checkout / "s3prl" / "downstream" / "cif_asr" / "expert.py").is_file()
        out = _run([sys.executable, "run_downstream.py", "-m", "train", "-d", "cif_asr", "-c",
                    str(REPO / "recycle_distill" / "s3prl" / "downstream_configs" / "cif_asr.yaml"), *upstream,
                    "-p", str(expdir), "-o", overrides, "--device", "cpu"],
                   checkout / "s3prl", PYTHONPATH=str(checkout))
        (expdir / "superb.log").write_text(out)
    _check_log(expdir, acd, lrd)
