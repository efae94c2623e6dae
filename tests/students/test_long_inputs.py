"""The inference blocks (blocked attention, per-utterance runs) equal the plain blocks.

After ``optimize_for_inference`` the students walk attention maps in blocks on CPU without
autograd (row blocks past ~14.5 s) and may run the CNN and layers one utterance at a time;
the plain model runs batched. Both must give the same numbers: on the ~1 s fixtures with
the thresholds shrunk (fast), and on real 16 s and 40 s inputs (slow).
"""

from __future__ import annotations

import pytest
import torch

from recycle_distill import build_student
from recycle_distill.inference import optimize_for_inference

from conftest import shrink_fast_paths
from helpers.tiny_students import tiny_student

FAMILIES = ["armhubert", "maskhubert", "starhubert", "fithubert"]
PRESETS = ["armhubert", "maskhubert", "starhubert", "fithubert"]


def padded_batch(seconds: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * 16000) for s in seconds])
    waves = torch.randn(len(seconds), int(lengths.max()), generator=generator) * 0.1
    waves[torch.arange(waves.shape[1])[None, :] >= lengths[:, None]] = 0
    return waves, lengths


def max_difference(model, waves, lengths) -> float:
    """Largest |inference blocks - plain blocks| over every hidden state's valid frames, in units of max(1, max |state|).

    Float32 sums taken in another order (batched vs per-utterance convolutions, blocked
    softmax) differ by a few 1e-6 of the values' size; a wrong block or row is off by O(1).
    """
    with torch.no_grad():
        fast = optimize_for_inference(model)(waves, lengths)
    plain = model(waves, lengths)  # with autograd: the plain path in every block
    worst = 0.0
    valid = ~plain.padding_mask if plain.padding_mask is not None else None
    for a, b in zip(fast.hidden_states, plain.hidden_states, strict=True):
        assert a.shape == b.shape
        difference = (a - b.detach()).abs()
        if valid is not None and valid.shape == difference.shape[:2]:
            difference = difference[valid]
        worst = max(worst, float(difference.max()) / max(1.0, float(b.detach().abs().max())))
    return worst


@pytest.mark.parametrize("family", FAMILIES)
def test_shrunk_fast_paths_equal_autograd_on_the_fixtures(family, monkeypatch):
    shrink_fast_paths(monkeypatch)
    model = tiny_student(family)
    waves, lengths = padded_batch([1.0, 0.7, 0.85])
    assert max_difference(model, waves, lengths) <= 1e-5


def float32_statistics_tolerance(seconds: float) -> float:
    """The bound for ``max_difference`` on inputs up to ``seconds`` long.

    The longest float32 reduction is the first CNN block's GroupNorm: mean and variance of each
    channel over all of an utterance's n = (S - 10) // 5 + 1 conv frames. The plain blocks'
    channels-first kernel stays within 7e-7 of a float64 copy of the model at 40 s; the fast
    blocks' channels-last kernel's error grows about linearly in n and halves at two threads, as
    a frame-by-frame sum with one partial sum per thread would. Measured ``max_difference``
    (ARMHuBERT, MaskHuBERT, STaRHuBERT, FitHuBERT): one thread 3.7e-6 .. 6.4e-6 at 16 s,
    8.5e-6 .. 2.0e-5 at 40 s; two threads 4.4e-6 .. 8.0e-6 at 40 s (the 40 s pair: 8.5e-6 ..
    2.0e-5 at either count).
    Bound: the probabilistic error of an n-term float32 sum, sqrt(n) u (u = 2^-24, Higham and
    Mary 2019), times 2 for the two paths' independent errors: 2.7e-5 at 16 s, 4.3e-5 at 40 s,
    at least 2x every measurement above. A wrong block, row or mask is off by O(1e-2) or more.
    The one-thread error grows faster than sqrt(n): past ~100 s this bound would need n u instead.
    """
    frames = (int(seconds * 16000) - 10) // 5 + 1
    return 2 * frames ** 0.5 * 2.0 ** -24


@pytest.mark.slow
@pytest.mark.parametrize("seconds, tolerance", [
    ([16.0, 12.7], float32_statistics_tolerance(16.0)),
    ([40.0], float32_statistics_tolerance(40.0)),
    # A 40 s pair also takes the per-utterance CNN and layers: the same statistics, the same bound.
    ([40.0, 36.7], float32_statistics_tolerance(40.0)),
], ids=["16s-pair", "40s", "40s-pair"])
@pytest.mark.parametrize("family", FAMILIES)
def test_long_inputs_agree_between_no_grad_and_autograd_tiny(family, seconds, tolerance):
    model = tiny_student(family)
    waves, lengths = padded_batch(seconds)
    assert max_difference(model, waves, lengths) <= tolerance


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [16.0, 40.0])
@pytest.mark.parametrize("preset", PRESETS)
def test_long_inputs_agree_between_no_grad_and_autograd_full_size(preset, seconds):
    """Random full-size weights amplify summation-order differences: 1e-4."""
    torch.manual_seed(0)
    model = build_student(preset).eval()
    waves, lengths = padded_batch([seconds])
    assert max_difference(model, waves, lengths) <= 1e-4


# ------------------------------------------------------------------ 10 minutes in bounded memory
# The upstream runs in a subprocess whose address space (RLIMIT_AS) is capped at what it has
# mapped once the model and the input exist plus TEN_MINUTE_HEADROOM. Measured (tiny ARMHuBERT,
# 96-dim, 4 heads; 600 s = 29,999 frames; one thread): the map-free forward raises the peak by
# ~0.5 GiB (the CNN's activations are the largest part, ~250 MB for the first conv) and takes
# ~75 s; with stored maps the first full layer asks for one (1, 4, T, T) float32 map, 14.4 GB.
# Real-size ARMHuBERT is not run here: its 600 s forward is ~12 TFLOP of attention, ~10 minutes
# on this machine's CPU (docs/inference.md, "Long recordings", states its measured bound).
TEN_MINUTE_HEADROOM = 1536 * 2**20

TEN_MINUTES_SCRIPT = """
import resource, sys
import torch
from recycle_distill.s3prl.upstream import StudentUpstream
import recycle_distill.inference.blocks.attention as fast_attention

ckpt, config, stored_maps, headroom = sys.argv[1], sys.argv[2], sys.argv[3] == "stored", int(sys.argv[4])
if stored_maps:  # the fast blocks then never go map-free: the stored-map version
    fast_attention.MAP_FREE_FROM_BYTES = float("inf")
upstream = StudentUpstream(ckpt, config, family="armhubert")
wave = torch.randn(600 * 16000, generator=torch.Generator().manual_seed(0)) * 0.1
mapped = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmSize"))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + headroom, mapped + headroom))
with torch.inference_mode():
    states = upstream([wave])["hidden_states"]
print("frames", states[-1].shape[1], "finite", bool(torch.isfinite(states[-1]).all()))
"""


@pytest.mark.slow
def test_ten_minutes_run_under_an_address_space_limit_that_stored_maps_exceed(tiny_arm_files, tmp_path):
    import os
    import subprocess
    import sys

    ckpt, config, _ = tiny_arm_files
    results = {}
    for version in ("map-free", "stored"):
        results[version] = subprocess.run(
            [sys.executable, "-c", TEN_MINUTES_SCRIPT, str(ckpt), str(config), version, str(TEN_MINUTE_HEADROOM)],
            capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert results["map-free"].returncode == 0, results["map-free"].stderr[-3000:]
    assert "frames 29999 finite True" in results["map-free"].stdout
    assert results["stored"].returncode != 0
    assert "can't allocate memory" in results["stored"].stderr, results["stored"].stderr[-3000:]
