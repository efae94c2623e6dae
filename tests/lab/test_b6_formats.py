"""benchmarks/b6_formats.py (every inference format) and its phase split, benchmarks/format_split.py."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import b6_formats  # noqa: E402
import format_split  # noqa: E402

FORMAT_ROWS = [f"{preset} {fmt}" for preset in b6_formats.PRESETS for fmt in b6_formats.FORMATS]


def test_worst_relative_error_is_the_worst_layer():
    reference = [torch.ones(2, 3), torch.full((2, 3), 2.0)]
    states = [torch.ones(2, 3) * 1.01, torch.full((2, 3), 2.0)]
    assert b6_formats.worst_relative_error(states, reference) == pytest.approx(0.01, rel=1e-4)
    with pytest.raises(ValueError, match="1 hidden states against 2 in the fp32 reference"):
        b6_formats.worst_relative_error(states[:1], reference)


def test_best_time_at_peak_uses_each_formats_peak():
    flops = {"CNN": 4e9, "attention": 1e9, "Linear": 5e9, "other": 0}
    peaks = {"fp32": 100.0, "bf16": 400.0, "int8": 1000.0}
    assert b6_formats.best_time_at_peak(flops, "fp32", peaks) == pytest.approx(0.1)
    assert b6_formats.best_time_at_peak(flops, "bf16", peaks) == pytest.approx(0.025)
    # ORT int8 quantizes the Linears only: CNN and attention stay at the fp32 peak; torch's int8
    # format also runs the CNN in bf16.
    assert b6_formats.best_time_at_peak(flops, "ort-int8", peaks) == pytest.approx(0.005 + 0.05)
    assert b6_formats.best_time_at_peak(flops, "int8", peaks) == pytest.approx(0.005 + 0.01 + 0.01)


def test_limiting_phase_is_where_most_time_is_lost():
    seconds = {"CNN": 0.5, "attention": 0.1, "Linear": 0.4, "other": 0.0}
    flops = {"CNN": 45e9, "attention": 0, "Linear": 10e9, "other": 0}
    peaks = dict.fromkeys(format_split.PHASES, 100.0)
    # lost: CNN 0.5 - 0.45 = 0.05, attention 0.1, Linear 0.4 - 0.1 = 0.3
    assert format_split.limiting_phase(seconds, flops, peaks) == (
        "Linear: 40% of the time at 25 GFLOP/s (peak 100; 30% of the time lost there)")


def test_no_limiting_phase_when_every_phase_runs_at_its_peak():
    seconds = dict.fromkeys(format_split.PHASES, 0.1)
    flops = dict.fromkeys(format_split.PHASES, 10e9)
    peaks = dict.fromkeys(format_split.PHASES, 100.0)
    assert format_split.limiting_phase(seconds, flops, peaks) == "none: every phase ran at or above its peak"


@pytest.mark.parametrize("name, op, previous, phase", [
    ("/student/feature_extractor/conv_layers.1/conv/Conv", "Conv", "other", "CNN"),
    ("Gelu_token_3", "Gelu", "CNN", "CNN"),  # fused by ORT after a CNN conv
    ("BiasGelu_token_9", "BiasGelu", "Linear", "other"),
    ("/student/encoder/layers.0/self_attn/q_proj/MatMul", "MatMul", "other", "Linear"),
    ("/student/encoder/layers.0/self_attn/MatMul_1", "MatMul", "Linear", "attention"),
    ("/student/encoder/layers.0/self_attn/Softmax", "Softmax", "attention", "attention"),
    ("/student/encoder/layers.0/fc1/MatMul_quant", "DynamicQuantizeMatMul", "other", "Linear"),
    ("/student/encoder/pos_conv/conv/Conv", "Conv", "other", "other"),
])
def test_ort_nodes_map_to_phases(name, op, previous, phase):
    assert format_split._ort_phase(name, op, [{"float": [1, 49, 480]}, {"float": [480, 480]}], previous) == phase


def test_torch_split_puts_each_op_in_its_phase():
    from recycle_distill import build_student

    torch.manual_seed(0)
    model = build_student("starhubert", encoder_layers=1)
    waves = torch.randn(1, 8000)
    split = format_split.torch_time_split(model, lambda: model(waves))
    assert set(split) == set(format_split.PHASES) and all(split[p] > 0 for p in format_split.PHASES)
    flops = format_split.flop_split(model, lambda: model(waves))
    assert flops["CNN"] > flops["Linear"] > flops["attention"] > 0 and flops["other"] > 0  # other: positional conv


@pytest.mark.slow  # HuBERT Base and four ONNX exports: ~20 s on 2 quiet cores
def test_b6_quick_reports_every_format(tmp_path):
    env = dict(os.environ, KINETO_LOG_LEVEL="5")
    out = tmp_path / "b6.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "b6_formats.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    rows = results["batches"]["1"]
    skipped = results["skipped"]
    assert {"HuBERT Base fp32", "HuBERT Base bf16"} <= set(rows)
    assert set(FORMAT_ROWS) <= set(rows) | set(skipped)  # every format timed, or skipped with its reason
    assert all(reason for reason in skipped.values())
    from recycle_distill.inference import torch_int8_available

    if torch_int8_available()[0]:
        assert "armhubert int8" in rows
    for preset in b6_formats.PRESETS:
        assert rows[f"{preset} fp32"]["worst_layer_rel_l2"] is None  # the reference itself
        assert rows[f"{preset} bf16"]["worst_layer_rel_l2"] < 5e-2
        if f"{preset} ort-fp32" in rows:  # same graph, same weights: fp32 summation order only
            assert rows[f"{preset} ort-fp32"]["worst_layer_rel_l2"] < 1e-4
    assert rows["HuBERT Base bf16"]["worst_layer_rel_l2"] < 5e-2
    assert rows["HuBERT Base bf16"]["peak"] == "bf16" and rows["armhubert fp32"]["peak"] == "fp32"
    assert set(results["split_s"]) == set(rows) - {"peaks_gflops", "peak_samples"}
    assert all(goal["bound"] > 0 and goal["ceiling"] > 0 for goal in results["goals"])
    assert {goal["goal"] for goal in results["goals"]} == {
        "best format vs our fp32", "ARMHuBERT bf16 vs HuBERT Base bf16",
        "ARMHuBERT best format vs HuBERT Base fp32", "bf16 fraction of the bf16 peak",
        "attention phase of the bf16 students vs the bf16 peak"}
    attention = {goal["row"]: goal for goal in results["goals"] if goal["goal"].startswith("attention phase")}
    assert set(attention) == {f"{preset} bf16" for preset in b6_formats.PRESETS}
    for preset, goal in ((p, attention[f"{p} bf16"]) for p in b6_formats.PRESETS):
        # The attention FLOPs over the attention share of the timed median, against the bf16 peak.
        split = results["split_s"][f"{preset} bf16"]
        seconds = split["attention"] / sum(split.values()) * rows[f"{preset} bf16"]["time_s"]
        rate = results["flops"][preset]["attention"] / seconds / 1e9
        assert goal["attention_gflops"] == pytest.approx(rate)
        assert goal["measured"] == pytest.approx(rate / rows["peaks_gflops"]["bf16"])
    for heading in ("1. best student format", "2. armhubert bf16", "3. armhubert's best format", "4. bf16 student",
                    "5. attention phase"):
        assert heading in done.stdout


@pytest.mark.s3prl
def test_hubert_base_flop_split_finds_its_cnn():
    """S3PRL's HuBERT runs through ``extract_features`` (a method), so FlopCounterMode names its CNN
    ``ConvFeatureExtractionModel``; the split must still find it."""
    from recycle_distill.lab import profiling

    teacher = profiling.build_hubert_base()
    waves = profiling.make_waveforms(1, 1.0)
    flops = format_split.flop_split(teacher, lambda: teacher.extract_features(waves, padding_mask=None, mask=False))
    # 1 s = 16,000 samples; conv output lengths 3199, 1599, 799, 399, 199 (k3 s2), 99, 49 (k2 s2).
    cnn = 2 * 512 * 10 * 3199 + 2 * 512 * 512 * 3 * (1599 + 799 + 399 + 199) + 2 * 512 * 512 * 2 * (99 + 49)
    assert flops["CNN"] == cnn
    assert flops["attention"] == 12 * 2 * 2 * 12 * 49 * 49 * 64  # QK^T and AV per layer
    # The grouped positional conv (16 groups of 48 channels, kernel 128, padding 64): 50 outputs,
    # the last one dropped after the conv.
    assert flops["other"] == 2 * 768 * 48 * 128 * 50
