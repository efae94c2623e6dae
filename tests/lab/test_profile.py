"""`recycle-distill profile` and the benchmark scripts."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recycle_distill import build_student
from recycle_distill.lab import profiling
from recycle_distill.cli import main as cli_main

from conftest import load_fixture

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Every benchmark script (b1_inference.py, b2_..., b4_train_step.py, ...).
# B6's --quick run has its own test with checks of its output (tests/lab/test_b6_formats.py).
CHECKED_ELSEWHERE = {"b6_formats.py", "b9_recognizer.py"}  # each has its own test of its --quick output
BENCHMARKS = sorted(path.name for path in (ROOT / "benchmarks").glob("b[0-9]_*.py") if path.name not in CHECKED_ELSEWHERE)


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
    every = {path.name for path in (ROOT / "benchmarks").glob("b[0-9]_*.py")}
    assert every == set(BENCHMARKS) | CHECKED_ELSEWHERE
    assert '"b6_formats.py"), "--quick"' in (ROOT / "tests" / "lab" / "test_b6_formats.py").read_text()
    assert '"b9_recognizer.py"), "--quick"' in (ROOT / "tests" / "lab" / "test_b9_recognizer.py").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_runs_quick(script):
    env = dict(os.environ)
    env.setdefault("KINETO_LOG_LEVEL", "5")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "==" in done.stdout


def _spy_targets(monkeypatch) -> list:
    """Record the ProfileTargets the CLI hands to profile_models."""
    seen = []
    real = profiling.profile_models

    def spy(targets, **kwargs):
        seen.extend(targets)
        return real(targets, **kwargs)

    monkeypatch.setattr(profiling, "profile_models", spy)
    return seen


def test_cli_profiles_in_bf16_and_counts_in_fp32(tiny_arm_files, capsys, monkeypatch):
    """--dtype bf16 times a bf16 student with the fast blocks; FLOPs and params are the fp32
    plain model's, so they equal the fp32 run's."""
    ckpt, config, _ = tiny_arm_files
    base = ["profile", str(ckpt), "-g", str(config), "--seconds", "0.5", "--repeats", "1", "--no-memory",
            "--no-teacher"]
    targets = _spy_targets(monkeypatch)
    assert cli_main(base + ["--dtype", "bf16"]) == 0
    assert ("dtype: bf16; student: bf16, fast blocks (optimize_for_inference); params and FLOPs counted on "
            "the fp32 model with the plain blocks") in capsys.readouterr().out
    [student] = targets
    assert {p.dtype for p in student.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in student.counted_model.parameters()} == {torch.float32}
    assert any(type(m).__module__.startswith("recycle_distill.inference") for m in student.model.modules())
    counts = {}
    for dtype in ("fp32", "bfloat16"):
        assert cli_main(base + ["--json", "--dtype", dtype]) == 0
        report = json.loads(capsys.readouterr().out)
        counts[report["setting"]["dtype"]] = {k: report["profiles"][0][k]
                                              for k in ("flops", "params_total", "params_without_heads")}
    assert list(counts) == ["fp32", "bf16"]  # the alias is reported by its one name
    assert counts["bf16"] == counts["fp32"] and counts["fp32"]["flops"] > 0


@pytest.mark.slow  # builds HuBERT Base twice (fp32 for the counts, bf16 for the timing)
def test_cli_profiles_a_bf16_teacher_beside_a_bf16_student(tiny_arm_files, capsys, monkeypatch):
    ckpt, config, _ = tiny_arm_files
    targets = _spy_targets(monkeypatch)
    assert cli_main(["profile", str(ckpt), "-g", str(config), "--seconds", "0.5", "--repeats", "1",
                     "--no-memory", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "; teacher: bf16 copy of the same weights;" in out and "HuBERT Base" in out
    _, teacher = targets
    assert {p.dtype for p in teacher.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in teacher.counted_model.parameters()} == {torch.float32}
    fp32, bf16 = teacher.counted_model.state_dict(), teacher.model.state_dict()
    assert all(torch.equal(bf16[k], v.to(torch.bfloat16)) for k, v in fp32.items())  # same weights


def test_cli_profiles_int8_plain_blocks(tiny_arm_files, capsys, monkeypatch):
    from recycle_distill.inference import torch_int8_available

    available, why = torch_int8_available()
    if not available:
        pytest.skip(why)
    ckpt, config, fixture = tiny_arm_files
    targets = _spy_targets(monkeypatch)
    argv = ["profile", str(ckpt), "-g", str(config), "--seconds", "0.5", "--repeats", "0", "--no-memory",
            "--dtype", "int8", "--plain", "--json", "--no-teacher"]
    assert cli_main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["setting"]["dtype"] == "int8" and report["setting"]["student_blocks"] == "plain"
    # int8 Linears keep their weights out of parameters(); the count is the fp32 model's.
    assert report["profiles"][0]["params_total"] == sum(v.numel() for v in fixture["state_dict"].values()
                                                        if v.is_floating_point())
    student = targets[0].model
    assert not any(type(m).__module__.startswith("recycle_distill.inference") for m in student.modules())
    assert not any(type(m) is torch.nn.Linear for m in student.modules())


def test_profile_says_the_teacher_stays_fp32_under_int8():
    from recycle_distill.cli.profile import precision_line

    assert precision_line("int8", False, "fp32") == (
        "dtype: int8; student: int8, fast blocks (optimize_for_inference); teacher: fp32 (int8 applies to our "
        "students' Linear layers only); params and FLOPs counted on the fp32 model with the plain blocks")
    assert precision_line("fp32", True, "fp32") == (
        "dtype: fp32; student: fp32, plain blocks (--plain); teacher: fp32; params and FLOPs counted on the "
        "fp32 model with the plain blocks")


def test_cli_rejects_an_unsupported_dtype(capsys):
    assert cli_main(["profile", "armhubert", "--dtype", "fp16"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --dtype: unsupported precision 'fp16'; choose one of fp32, bf16, int8\n"
