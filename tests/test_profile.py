"""`recycle-distill profile` and the benchmark scripts."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recycle_distill import build_student, profiling
from recycle_distill.cli import main as cli_main

from conftest import load_fixture

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Every benchmark script (b1_inference.py, b2_..., b4_train_step.py, ...).
BENCHMARKS = sorted(path.name for path in (ROOT / "benchmarks").glob("b[0-9]_*.py"))


def _tiny(family: str):
    fixture = load_fixture(f"golden_tiny_{family}.pt")
    model = build_student(fixture["config"], family=family)
    model.load_state_dict(fixture["state_dict"])
    return model


def test_profile_counts_the_flops_flopcountermode_counts():
    """Equal to a plain FlopCounterMode count of the autograd path (standard conv and bmm ops)."""
    model = _tiny("armhubert")
    waves = profiling.make_waveforms(2, 0.5)
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        model(waves)
    [profile] = profiling.profile_models(
        [profiling.ProfileTarget("tiny", model, profiling.student_forward(model), profiling.STUDENT_HEAD_PREFIXES)],
        seconds=0.5, batch=2, repeats=1, warmup=0,
    )
    assert profile.flops == counter.get_total_flops() > 0
    assert profile.macs == profile.flops // 2
    assert profile.params.total == sum(p.numel() for p in model.parameters())
    assert profile.params.without_heads == profile.params.total - sum(p.numel() for p in model.proj_head.parameters())
    assert len(profile.times) == 1 and profile.median_time > 0
    assert profile.peak_memory_bytes is not None and profile.peak_memory_bytes > 0


def test_fused_cpu_attention_is_counted():
    """FlopCounterMode has no formula for the CPU flash-attention kernel; ours adds it."""
    query = torch.randn(2, 4, 30, 8)
    with torch.inference_mode(), FlopCounterMode(display=False) as plain:
        torch.nn.functional.scaled_dot_product_attention(query, query, query)
    counted = profiling.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(query, query, query))
    assert counted == 4 * 2 * 4 * 30 * 30 * 8
    assert plain.get_total_flops() in (0, counted)  # 0 where torch lacks the formula
    by_op = profiling.count_flops_by_op(lambda: torch.nn.functional.scaled_dot_product_attention(query, query, query))
    assert profiling.fused_attention_flops(by_op) == counted


def test_peak_memory_sees_live_tensor_bytes():
    def forward():
        a = torch.ones(1000, 1000)  # 4 MB
        b = a * 2  # +4 MB
        del a
        c = torch.ones(2000, 1000)  # +8 MB while b lives: peak 12 MB
        return b.sum() + c.sum()

    measured = profiling.peak_memory(forward)
    assert measured.peak_bytes is not None
    assert 12_000_000 <= measured.peak_bytes < 12_100_000
    assert "profiler" in measured.method


def test_hubert_base_has_the_released_parameter_count():
    teacher = profiling.build_hubert_base()
    params = profiling.count_parameters(teacher, profiling.TEACHER_HEAD_PREFIXES)
    assert params.total == 94_697_600
    assert params.without_heads == 94_697_600 - (768 * 256 + 256) - 504 * 256


def test_cli_profiles_armhubert_against_hubert_base(capsys):
    assert cli_main(["profile", "armhubert", "--seconds", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "26.45M" in out and "94.70M" in out
    ratio = float(re.search(r"GFLOPs / forward\s+\S+\s+\S+\s+([0-9.]+)", out).group(1))
    assert ratio == round(ARMHUBERT_1S_FLOPS / HUBERT_BASE_1S_FLOPS, 3)
    assert "speed-up vs teacher" in out and "peak memory" in out


# FLOPs of one 1 s utterance (49 frames): FlopCounterMode on the autograd path, plus for HuBERT
# Base the attention matmuls its CPU kernel hides from it: 12 layers x (QK^T and AV) x 2 x 12
# heads x 49^2 x 64. Deterministic, so exact.
ARMHUBERT_1S_FLOPS = 4_028_819_840
HUBERT_BASE_1S_FLOPS = 13_734_238_208 + 12 * 2 * 2 * 12 * 49 * 49 * 64


@pytest.mark.slow  # two full-size models, twice each
def test_flop_counts_are_exact(capsys):
    import json

    waves = profiling.make_waveforms(1, 1.0)
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        from recycle_distill import build_student

        build_student("armhubert")(waves)
    assert counter.get_total_flops() == ARMHUBERT_1S_FLOPS
    assert cli_main(["profile", "armhubert", "--seconds", "1", "--repeats", "0", "--json"]) == 0
    profiles = {p["name"]: p for p in json.loads(capsys.readouterr().out)["profiles"]}
    assert profiles["armhubert"]["flops"] == ARMHUBERT_1S_FLOPS
    assert profiles["HuBERT Base"]["flops"] == HUBERT_BASE_1S_FLOPS
    assert profiles["armhubert"]["macs"] == ARMHUBERT_1S_FLOPS // 2


def test_cli_profiles_a_checkpoint(tiny_arm_files, capsys):
    ckpt, config, _ = tiny_arm_files
    argv = ["profile", str(ckpt), "--family", "armhubert", "-g", str(config), "--seconds", "0.5",
            "--no-teacher", "--repeats", "1", "--json"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert '"flops"' in out and '"params_total"' in out


def test_cli_says_when_timing_rows_are_left_out(tiny_arm_files, capsys):
    """Issue 11: --repeats 0 used to drop the timing rows without a word."""
    ckpt, config, _ = tiny_arm_files
    assert cli_main(["profile", str(ckpt), "-g", str(config), "--seconds", "0.5", "--repeats", "0", "--no-teacher"]) == 0
    out = capsys.readouterr().out
    assert "time: not measured (--repeats 0), so the timing rows are left out" in out
    assert "wall time" not in out and "GFLOPs / forward" in out
    assert cli_main(["profile", str(ckpt), "-g", str(config), "--repeats", "-1", "--no-teacher"]) == 2
    assert capsys.readouterr().err.strip() == "error: --batch must be >= 1, --seconds > 0 and --repeats >= 0"


def test_cli_rejects_an_unknown_model(capsys):
    assert cli_main(["profile", "no-such-preset", "--no-teacher"]) == 1
    assert "neither a preset" in capsys.readouterr().err  # errors go to stderr (issue 11)


def test_every_benchmark_is_collected():
    assert {"b1_inference.py", "b2_reference_formulation.py", "b3_efficiency.py", "b5_scale.py"} <= set(BENCHMARKS)


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_runs_quick(script):
    env = dict(os.environ)
    env.setdefault("KINETO_LOG_LEVEL", "5")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "==" in done.stdout
