"""The SUPERB launcher: registration, argv planning, checkpoint allow-list, S3PRLUpstream."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from recycle_distill.checkpoint import save_compact
from recycle_distill.s3prl.superb import launcher
from recycle_distill.s3prl.superb.launcher import (
    ASR_DICT,
    CONFIG_DIR,
    hub_entries,
    plan_launch,
    register_upstreams,
    shipped_config,
)
from recycle_distill.upstreams import FAMILIES

from conftest import load_fixture
from helpers.superb_data import tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _public_entries(family: str) -> set[str]:
    module = importlib.import_module(f"recycle_distill.upstreams.{family}.hubconf")
    return {name for name in dir(module) if callable(getattr(module, name)) and not name.startswith("_")}


def test_hub_entries_are_every_public_entry_of_every_family():
    entries = hub_entries()
    expected = set().union(*(_public_entries(family) for family in FAMILIES))
    assert set(entries) == expected
    for family in FAMILIES:
        assert {family, f"{family}_local", f"{family}_url"} <= set(entries)
    assert {"armhubert_960h", "armwavlm_s_960h", "maskhubert_960h"} <= set(entries)


def test_register_sets_every_entry_on_the_given_hub_and_keeps_others():
    hub = types.ModuleType("fake_hub")
    hub.hubert = lambda *args, **kwargs: "theirs"
    names = register_upstreams(hub)
    assert set(names) == set(hub_entries())
    assert all(getattr(hub, name) is hub_entries()[name] for name in names)
    assert hub.hubert() == "theirs"
    assert register_upstreams(hub) == names  # idempotent


def test_foreign_entry_of_the_same_name_is_replaced_with_a_warning(caplog):
    hub = types.ModuleType("fake_hub")

    def armhubert(*args, **kwargs):
        return None

    armhubert.__module__ = "someone.else"
    hub.armhubert = armhubert
    register_upstreams(hub)
    assert hub.armhubert is hub_entries()["armhubert"]
    assert "replaced" in caplog.text


@pytest.mark.s3prl
def test_register_in_the_real_s3prl_hub():
    import s3prl.hub

    register_upstreams()
    for name, entry in hub_entries().items():
        assert getattr(s3prl.hub, name) is entry
    assert {"armhubert", "starhubert_local"} <= set(s3prl.hub.options())
    assert "armhubert_960h" in s3prl.hub.options(only_registered_ckpt=True)


# ------------------------------------------------------------------------------------------
# argv planning
# ------------------------------------------------------------------------------------------

BASE = ["-m", "train", "-n", "sid", "-u", "armhubert", "-k", "x.ckpt"]


def _after(argv: list[str], option: str) -> str:
    return argv[len(argv) - 1 - argv[::-1].index(option) + 1]  # the last value, as argparse keeps


def test_shipped_config_and_device_are_appended(tmp_path):
    plan = plan_launch(BASE + ["-d", "voxceleb1"], cuda_available=False, cwd=str(tmp_path))
    assert plan.argv[:len(BASE) + 2] == BASE + ["-d", "voxceleb1"]
    assert _after(plan.argv, "-c") == str(CONFIG_DIR / "voxceleb1.yaml")
    assert _after(plan.argv, "--device") == "cpu"
    assert "tweaked" in plan.config_note and plan.device_note.startswith("cpu")
    assert plan.log_path == Path("result/downstream/sid/superb.log")


def test_given_config_and_device_are_kept(tmp_path):
    plan = plan_launch(BASE + ["-d", "voxceleb1", "-c", "mine.yaml", "--device", "cuda:1"], cuda_available=False,
                       cwd=str(tmp_path))
    assert plan.argv.count("-c") == 1 and _after(plan.argv, "-c") == "mine.yaml"
    assert plan.argv.count("--device") == 1 and _after(plan.argv, "--device") == "cuda:1"
    assert plan.added == [] and plan.device_note == "cuda:1 (given)"


def test_long_and_abbreviated_options_are_understood(tmp_path):
    plan = plan_launch(["--mode=train", "--downstream", "voxceleb1", "--config=c.yaml", "--dev", "cpu", "--expdir", "e"],
                       cuda_available=False, cwd=str(tmp_path))
    assert plan.added == [] and plan.log_path == Path("e/superb.log")


def test_gpu_keeps_s3prl_default_device(tmp_path):
    plan = plan_launch(BASE + ["-d", "voxceleb1"], cuda_available=True, cwd=str(tmp_path))
    assert "--device" not in plan.argv and plan.device_note.startswith("cuda")


def test_ctc_needs_c_and_names_both_configs(tmp_path):
    with pytest.raises(ValueError) as error:
        plan_launch(BASE + ["-d", "ctc"], cuda_available=False, cwd=str(tmp_path))
    assert "ctc_libriphone.yaml" in str(error.value) and "ctc_snips.yaml" in str(error.value)
    plan = plan_launch(BASE + ["-d", "ctc", "-c", str(CONFIG_DIR / "ctc_snips.yaml")], cuda_available=False, cwd=str(tmp_path))
    assert plan.config.endswith("ctc_snips.yaml")
    with pytest.raises(ValueError, match="no shipped SUPERB config for -d nope"):
        shipped_config("nope")


def test_every_shipped_single_task_config_is_found():
    for downstream in ("speech_commands", "fluent_commands", "voxceleb1", "emotion", "asr", "sv_voxceleb1",
                       "quesst14_dtw", "diarization"):
        assert shipped_config(downstream).is_file()


def test_past_exp_takes_config_from_the_checkpoint_and_logs_beside_it(tmp_path):
    plan = plan_launch(["-m", "evaluate", "-e", "exp/states-8.ckpt", "-t", "test-clean"], cuda_available=False,
                       cwd=str(tmp_path))
    assert "-c" not in plan.argv and "checkpoint" in plan.config_note
    assert plan.log_path == Path("exp/superb.log") and (plan.mode, plan.split) == ("evaluate", "test-clean")
    folder = tmp_path / "exp_dir"
    folder.mkdir()
    assert plan_launch(["-m", "train", "-e", str(folder)], cuda_available=False).log_path == folder / "superb.log"


def test_asr_dictionary_is_pointed_at_the_shipped_one_only_when_needed(tmp_path):
    plan = plan_launch(BASE + ["-d", "asr", "-o", "config.runner.total_steps=4"], cuda_available=False, cwd=str(tmp_path))
    assert _after(plan.argv, "-o") == f"config.runner.total_steps=4,,config.downstream_expert.datarc.dict_path={ASR_DICT}"
    assert "<your -o>,," in plan.added[plan.added.index("-o") + 1]
    assert ASR_DICT.is_file()
    plan = plan_launch(BASE + ["-d", "asr", "-o", "config.downstream_expert.datarc.dict_path=my.dict"],
                       cuda_available=False, cwd=str(tmp_path))
    assert plan.argv.count("-o") == 1
    (tmp_path / "downstream" / "asr").mkdir(parents=True)
    (tmp_path / "downstream" / "asr" / "char.dict").write_text("| 1\n")  # a checkout's own dictionary
    assert plan_launch(BASE + ["-d", "asr"], cuda_available=False, cwd=str(tmp_path)).overrides == []


def test_no_log_is_ours_and_removed():
    plan = plan_launch(BASE + ["-d", "voxceleb1", "--no-log"], cuda_available=False)
    assert "--no-log" not in plan.argv and plan.log_path is None


def test_upstream_dtype_is_ours_checked_and_removed():
    for given in (["--upstream_dtype", "bf16"], ["--upstream_dtype=BF16"]):
        plan = plan_launch(BASE + ["-d", "voxceleb1", *given], cuda_available=False)
        assert plan.upstream_dtype == "bf16"
        assert not [t for t in plan.argv if t.startswith("--upstream_dtype") or t in ("bf16", "BF16")]
    assert plan_launch(BASE + ["-d", "voxceleb1"], cuda_available=False).upstream_dtype is None
    with pytest.raises(ValueError, match=r"^--upstream_dtype: unsupported precision 'fp8'; choose one of fp32, bf16, int8$"):
        plan_launch(BASE + ["-d", "voxceleb1", "--upstream_dtype", "fp8"], cuda_available=False)


def test_registered_entries_build_upstreams_in_the_asked_precision(tmp_path):
    hub = types.ModuleType("fake_hub")
    register_upstreams(hub, dtype="bf16")
    ckpt, config = tiny_checkpoint(tmp_path, "armhubert")
    upstream = hub.armhubert_local(str(ckpt), str(config))
    assert upstream.precision == "bf16"
    assert next(upstream.model.encoder.parameters()).dtype == torch.bfloat16
    assert hub.armhubert_local(str(ckpt), str(config), dtype="fp32").precision == "fp32"  # the caller's word wins
    with torch.no_grad():
        hidden = upstream([torch.randn(16000) * 0.1])["hidden_states"]
    assert hidden[0].dtype == torch.float32
    register_upstreams(hub)  # registering again without dtype restores the plain entries, silently
    assert hub.armhubert_local is hub_entries()["armhubert_local"]


def test_cli_reports_a_missing_config_before_importing_s3prl(capsys):
    from recycle_distill.cli import main

    assert main(["superb", "-m", "train", "-n", "x", "-u", "armhubert", "-d", "ctc"]) == 2
    assert "ctc_libriphone.yaml" in capsys.readouterr().err


def test_tee_appends_to_the_log():
    screen, log = io.StringIO(), io.StringIO()
    from recycle_distill.cli.superb import _Tee

    tee = _Tee(screen, log)
    print("test acc: 0.5", file=tee)
    assert screen.getvalue() == log.getvalue() == "test acc: 0.5\n"
    assert tee.getvalue() == screen.getvalue()  # everything else is the screen's


# ------------------------------------------------------------------------------------------
# S3PRL's states-*.ckpt under weights_only loading
# ------------------------------------------------------------------------------------------


def test_allow_list_admits_namespace_and_nothing_else(tmp_path):
    code = f"""
import argparse, pathlib, pickle, torch
from recycle_distill.s3prl.superb.launcher import allow_s3prl_checkpoints
states = {{"Args": argparse.Namespace(mode="train", upstream="armhubert", seed=1337), "Config": {{"runner": {{}}}},
          "Step": 4, "Featurizer": {{"weights": torch.zeros(3)}}}}
torch.save(states, {str(tmp_path / 'states-4.ckpt')!r})
torch.save({{"Args": pathlib.PurePosixPath("x")}}, {str(tmp_path / 'other.ckpt')!r})
try:
    torch.load({str(tmp_path / 'states-4.ckpt')!r})
    print("loaded before allow-listing")
except pickle.UnpicklingError:
    print("refused before")
print(allow_s3prl_checkpoints())
print(torch.load({str(tmp_path / 'states-4.ckpt')!r})["Args"].upstream)
try:
    torch.load({str(tmp_path / 'other.ckpt')!r})
    print("other loaded")
except pickle.UnpicklingError:
    print("other refused")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused", "before", "['argparse.Namespace']", "armhubert", "other", "refused"]


def test_launcher_never_switches_the_safe_loader_off():
    source = Path(launcher.__file__).read_text()
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in source and "weights_only=False" not in source


# ------------------------------------------------------------------------------------------
# S3PRLUpstream over our entries
# ------------------------------------------------------------------------------------------


@pytest.mark.s3prl
def test_s3prl_upstream_with_model_config_in_extra_conf(tmp_path):
    from s3prl.nn import S3PRLUpstream

    register_upstreams()
    ckpt, config = tiny_checkpoint(tmp_path, "armhubert")
    model = S3PRLUpstream("armhubert", path_or_url=str(ckpt), extra_conf={"model_config": str(config)})
    assert model.num_layers == 4 and model.hidden_sizes == [64] * 4 and model.downsample_rates == [320] * 4
    model.eval()
    wavs = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        hidden, lengths = model(wavs, torch.LongTensor([16000, 12000]))
    assert [tuple(h.shape) for h in hidden] == [(2, 50, 64)] * 4
    assert lengths[0].tolist() == [50, 38]


@pytest.mark.s3prl
def test_s3prl_upstream_with_a_compact_file_alone(tmp_path):
    from s3prl.nn import S3PRLUpstream

    register_upstreams()
    fixture = load_fixture("golden_tiny_starhubert.pt")
    path = tmp_path / "star.safetensors"
    save_compact(str(path), fixture["state_dict"], "starhubert", fixture["config"])
    model = S3PRLUpstream("starhubert", path_or_url=str(path))
    assert model.num_layers == 4 and model.hidden_sizes == [96] * 4
    model.eval()
    with torch.no_grad():
        hidden, _ = model(torch.stack([w[:11200] for w in fixture["wavs"]]), torch.LongTensor([11200, 11200]))
    assert hidden[0].shape == (2, 35, 96)


def test_the_run_line_names_the_real_mode_and_only_an_evaluation_names_a_split(tmp_path):
    from recycle_distill.s3prl.superb.launcher import HEADER, run_line
    from recycle_distill.s3prl.superb.logs import parse_log

    train = plan_launch(["-m", "train", "-p", "exp", "-d", "voxceleb1", "-t", "dev"], cuda_available=False,
                        cwd=str(tmp_path))
    evaluate = plan_launch(["-m", "evaluate", "-e", "exp/states-6.ckpt", "-t", "test-clean"], cuda_available=False)
    assert run_line(train) == f"{HEADER} run: mode=train"
    assert run_line(evaluate) == f"{HEADER} run: mode=evaluate split=test-clean"
    # The log reader takes both back, and still reads the header of earlier versions.
    log = tmp_path / "superb.log"
    log.write_text(f"{run_line(train)}\ntest acc: 0.5\n{run_line(evaluate)}\ntest acc: 0.75\n"
                   f"{HEADER} run: mode=train split=test\ntest acc: 0.25\n")
    assert [(obs.mode, obs.value) for obs in parse_log(log)] == [("train", 0.5), ("evaluate", 0.75), ("train", 0.25)]
