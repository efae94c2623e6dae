"""The distillation trainer: configs, objectives end to end, exact resume, DDP, bad input."""

import pathlib
import shutil
import signal
import sys

import pytest
import torch
from safetensors.torch import load_file

from recycle_distill.students.config import ConfigError
from recycle_distill.training.data.synth import espeak_available, make_tiny_librispeech
from recycle_distill.training import config_help, list_recipes, load_train_config
from recycle_distill.training.optim import warmup_linear_factor

from conftest import CONF
from helpers.train_helpers import metrics, run_cli, tiny_config, write_config

REPO = str(pathlib.Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "LibriSpeech"
    info = make_tiny_librispeech(root, speakers=4, utterances_per_speaker=4, subsets=("train-clean-100", "dev-clean"))
    if espeak_available():
        assert info.corpus_source == "espeak-ng"
    return root


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("*.yaml")))
def test_reference_recipes_load_unchanged(name):
    config = load_train_config(CONF / name)
    assert config.objective == "masking" and config.precision == "fp16"
    assert config.optimizer.lr in (5e-3, 5e-4) and config.train.distil_random_layer == 11


@pytest.mark.parametrize("name", ["armhubert-960", "armhubert-s-100", "armhubert-s-960", "armwavlm-s-100",
                                  "armwavlm-s-960", "maskhubert-960", "starhubert", "starhubert-l", "fithubert"])
def test_shipped_recipes_load_with_expected_sizes(name):
    assert name in list_recipes()
    config = load_train_config(name)
    expected = {"armhubert-960": 26_448_448, "maskhubert-960": 26_635_840, "starhubert": 22_308_592,
                "starhubert-l": 26_630_752}
    from recycle_distill.students import FAMILIES

    with torch.device("meta"):
        model = FAMILIES[config.family](config.student)
    count = sum(p.numel() for p in model.parameters())
    if name in expected:
        assert count == expected[name]
    if name.startswith(("armhubert-s", "armwavlm")):
        assert count == 22_394_080
    if name == "fithubert":  # 12 training heads; export keeps one (22,492,544)
        assert config.train.delete_projections and config.objective == "fithubert"
        assert len(config.student.pred_layer_id) == 12


def test_reference_values_of_the_armhubert_recipe():
    config = load_train_config("armhubert-s-100")
    assert (config.teacher.mask_prob, config.train.batch_size, config.train.accumulate_grad_batches) == (0.4, 6, 3)
    assert config.optimizer.betas == [0.9, 0.98] and config.optimizer.eps == 1e-6 and config.optimizer.weight_decay == 1e-6


def test_typo_in_a_training_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'train.bach_size'; did you mean 'train.batch_size'"):
        load_train_config("armhubert-960", ["train.bach_size=4"])
    with pytest.raises(ConfigError, match="unknown section 'trian'; did you mean 'train'"):
        load_train_config({"trian": {}, "distiller": {}})


def test_overrides_and_types():
    config = load_train_config("armhubert-960", ["train.batch_size=3", "optimizer.lr=1e-3", "teacher.mask_prob=0.65"])
    assert (config.train.batch_size, config.optimizer.lr, config.teacher.mask_prob) == (3, 1e-3, 0.65)
    with pytest.raises(ConfigError, match="train.batch_size' expects int"):
        load_train_config("armhubert-960", ["train.batch_size=three"])


def test_help_documents_every_key():
    text = config_help()
    from recycle_distill.training.config import SECTIONS
    import dataclasses

    for section, cls in SECTIONS.items():
        for spec in dataclasses.fields(cls):
            assert f"  {spec.name} (default" in text, f"{section}.{spec.name} undocumented"
    result = run_cli(["--help"])
    assert result.returncode == 0 and "accumulate_grad_batches" in result.stdout


def test_warmup_then_linear_decay():
    assert warmup_linear_factor(0, 100, 0.1) == 0.0
    assert warmup_linear_factor(5, 100, 0.1) == pytest.approx(0.5)
    assert warmup_linear_factor(10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_linear_factor(55, 100, 0.1) == pytest.approx(0.5)
    assert warmup_linear_factor(100, 100, 0.1) == 0.0


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.parametrize("family", ["armhubert", "starhubert", "fithubert"])
def test_each_objective_trains_and_exports_a_loadable_student(tmp_path, corpus, family):
    output = tmp_path / "run"
    config = tiny_config(corpus, output, family, train={"max_steps": 24, "batch_size": 4, "val_every_steps": 8,
                                                        "save_every_steps": 8, "delete_projections": family == "fithubert"},
                         distiller={"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0})
    config["optimizer"]["lr"] = 1.0e-3
    result = run_cli(["-c", str(write_config(tmp_path / "conf.yaml", config))])
    assert result.returncode == 0, result.stderr[-4000:]
    losses = [record["loss"] for record in metrics(output)]
    assert len(losses) == 24
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.9 * first, f"{family}: loss did not decrease: {first:.4f} -> {last:.4f}"
    assert (output / "tensorboard").is_dir() and any((output / "tensorboard").iterdir())
    assert "valid loss" in result.stderr

    export = output / "student.safetensors"
    upstream = torch.hub.load(REPO, family, source="local", ckpt=str(export))
    wavs = [torch.randn(16000) * 0.1, torch.randn(12000) * 0.1]
    with torch.no_grad():
        hidden = upstream(wavs)["hidden_states"]
    assert len(hidden) == 4 and hidden[0].shape[:2] == (2, 49)
    import importlib

    hubconf = importlib.import_module(f"recycle_distill.upstreams.{family}.hubconf")
    again = getattr(hubconf, f"{family}_local")(str(export))
    with torch.no_grad():
        assert torch.equal(again(wavs)["hidden_states"][-1], hidden[-1])
    if family == "fithubert":  # training heads dropped, the last one kept
        assert {k.split(".")[1] for k in load_file(str(export)) if k.startswith("proj_head.")} == {"0"}


# ------------------------------------------------------------------ exact resume
def _resume_config(corpus, output):
    return tiny_config(corpus, output, "armhubert", train={
        "max_steps": 8, "batch_size": 2, "accumulate_grad_batches": 2, "num_workers": 1, "save_every_steps": 1,
        "max_audio_seconds": 1.5, "deterministic": True, "keep_last": 2})


def _fault(fault: str) -> list[str]:
    """The test-only wrapper that injects a crash into the trainer (tests/helpers/fault_wrapper.py)."""
    return [sys.executable, str(pathlib.Path(__file__).parents[1] / "helpers" / "fault_wrapper.py"), fault]


@pytest.mark.slow
def test_killed_run_resumes_bit_identically(tmp_path, corpus):
    reference = tmp_path / "uninterrupted"
    result = run_cli(["-c", str(write_config(tmp_path / "a.yaml", _resume_config(corpus, reference)))])
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    conf = write_config(tmp_path / "b.yaml", _resume_config(corpus, killed))
    # micro-batch 7 = the first half of step 4's accumulation cycle: SIGKILL there.
    result = run_cli(["-c", str(conf)], launcher=_fault("kill:7"))
    assert result.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (killed / "checkpoints").glob("step-*.pt"))[-1] == "step-00000003.pt"
    # A kill in the middle of writing step 5's checkpoint leaves step 4's loadable.
    result = run_cli(["-c", str(conf), "train.checkpoint=last"], launcher=_fault("save:5"))
    assert result.returncode == -signal.SIGKILL
    assert list((killed / "checkpoints").glob(".tmp-*")), "the killed write should have left its temp file"
    from recycle_distill.training.state import latest_checkpoint, load_training_state

    assert load_training_state(latest_checkpoint(str(killed / "checkpoints")))["step"] == 4
    result = run_cli(["-c", str(conf), "train.checkpoint=last"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr

    expected, resumed = load_file(str(reference / "student.safetensors")), load_file(str(killed / "student.safetensors"))
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), f"{key} differs after resume"
    # Steps redone after a kill are logged again; every logged value equals the uninterrupted one.
    expected_losses = {m["step"]: m["loss"] for m in metrics(reference)}
    for record in metrics(killed):
        assert record["loss"] == expected_losses[record["step"]], record


# ------------------------------------------------------------------ DDP
@pytest.mark.slow
def test_torchrun_two_processes_match_a_single_process(tmp_path, corpus):
    common = {"batch_size": 2, "max_steps": 3, "max_audio_seconds": 0.75, "num_workers": 0, "save_every_steps": 3}
    no_dropout = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0}
    single_out, ddp_out = tmp_path / "single", tmp_path / "ddp"
    single = tiny_config(corpus, single_out, train={**common, "accumulate_grad_batches": 2}, distiller=no_dropout)
    ddp = tiny_config(corpus, ddp_out, train={**common, "accumulate_grad_batches": 1}, distiller=no_dropout)
    result = run_cli(["-c", str(write_config(tmp_path / "single.yaml", single))])
    assert result.returncode == 0, result.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "recycle_distill", "train"]
    result = run_cli(["-c", str(write_config(tmp_path / "ddp.yaml", ddp))], launcher=torchrun)
    assert result.returncode == 0, result.stderr[-5000:]
    single_losses = [m["loss"] for m in metrics(single_out)][:3]
    ddp_losses = [m["loss"] for m in metrics(ddp_out)][:3]
    assert len(ddp_losses) == 3
    for a, b in zip(single_losses, ddp_losses):
        assert abs(a - b) <= 1e-4 * abs(a), (single_losses, ddp_losses)
    # The trained weights, not only the losses: the exports agree to float rounding.
    expected, trained = load_file(str(single_out / "student.safetensors")), load_file(str(ddp_out / "student.safetensors"))
    assert expected.keys() == trained.keys()
    for key in expected:
        torch.testing.assert_close(trained[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    # Only rank 0 writes: one metrics line per step, one TensorBoard file, one checkpoint.
    assert [m["step"] for m in metrics(ddp_out)] == [1, 2, 3]
    assert len(list((ddp_out / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (ddp_out / "checkpoints").iterdir()) == ["step-00000003.pt"]


# ------------------------------------------------------------------ bad input
def _check(tmp_path, config):
    return run_cli(["-c", str(write_config(tmp_path / "conf.yaml", config)), "--check"])


def test_missing_subset_is_reported_before_training(tmp_path, corpus):
    config = tiny_config(corpus, tmp_path / "o")
    config["data"]["train_set"] = ["train-clean-360"]
    result = _check(tmp_path, config)
    assert result.returncode != 0 and "train-clean-360" in result.stderr


def test_empty_manifest_is_reported(tmp_path, corpus):
    empty = tmp_path / "empty.tsv"
    empty.write_text(f"{tmp_path}\n")
    config = tiny_config(corpus, tmp_path / "o", data={"manifest": str(empty)})
    result = _check(tmp_path, config)
    assert result.returncode != 0 and "empty" in result.stderr.lower()


def test_unknown_teacher_kind_is_reported(tmp_path, corpus):
    bogus = tmp_path / "bogus.pt"
    torch.save({"cfg": {"model": {"_name": "conformer_xyz"}}, "model": {"w": torch.zeros(1)}}, bogus)
    config = tiny_config(corpus, tmp_path / "o", teacher={"teacher_model": str(bogus)})
    result = _check(tmp_path, config)
    assert result.returncode != 0 and "bogus.pt" in result.stderr


def test_impossible_layer_mapping_is_reported(tmp_path, corpus):
    config = tiny_config(corpus, tmp_path / "o", teacher={"layer_mapping": [0, 1, 2, 9]})
    result = _check(tmp_path, config)
    assert result.returncode != 0 and "teacher layer 9 is impossible" in result.stderr


def test_config_typo_fails_before_training(tmp_path, corpus):
    config = tiny_config(corpus, tmp_path / "o", train={"num_epoch": 3})
    result = _check(tmp_path, config)
    assert result.returncode == 2 and "did you mean 'train.num_epochs'" in result.stderr  # errors go to stderr (issue 11)


def test_head_width_must_match_the_teacher(tmp_path, corpus):
    config = tiny_config(corpus, tmp_path / "o", distiller={"pred_head_final_dim": 64})
    result = _check(tmp_path, config)
    assert result.returncode != 0 and "pred_head_final_dim is 64" in result.stderr


@pytest.mark.slow
def test_corrupt_audio_is_skipped_and_counted(tmp_path, corpus):
    broken = tmp_path / "LibriSpeech"
    shutil.copytree(corpus, broken)
    victim = next((broken / "train-clean-100").rglob("*.flac"))
    victim.write_bytes(b"not audio at all" * 100)
    config = tiny_config(broken, tmp_path / "o", train={"max_steps": 5})
    result = run_cli(["-c", str(write_config(tmp_path / "conf.yaml", config))])
    assert result.returncode == 0, result.stderr[-3000:]
    assert victim.name in result.stderr or victim.stem in result.stderr
