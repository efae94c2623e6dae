"""The ONNX Runtime runner feeds the session the true lengths: on a padded batch it gives, at
every valid frame of every utterance (the last one included), what the PyTorch student gives on
the same batch with the same lengths.

A length off by one changes the padding mask only where it moves a frame boundary, and then at
the last frame only: frame ``t`` is valid while ``400 + 320 t <= S`` (``(S - 400) // 320 + 1``
frames). So the batch holds an utterance whose last frame ends exactly on its last sample
(``S - 1`` drops that frame) and one a sample short of another frame (``S + 1`` adds one), and
the comparison runs over every valid frame.

(The other reference the issue suggests, each utterance run alone, is no reference here: the
students, like the fairseq models they reproduce, normalise and convolve over the padded length,
so a padded row differs from the same utterance alone by 0.4 (ARMHuBERT) to 1.2 (FitHuBERT) of
the layer's size, in PyTorch as in ONNX Runtime.)"""

from __future__ import annotations

import pytest
import torch

from helpers.tiny_students import tiny_student
from recycle_distill.students.blocks.masks import pad_waveforms

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from recycle_distill.inference.onnx_export import export_onnx  # noqa: E402
from recycle_distill.inference.onnx_runtime import OnnxStudentUpstream  # noqa: E402

pytestmark = pytest.mark.onnx

# The runner is one for every family; two unlike students (ARMHuBERT's fixture, FitHuBERT's own
# tiny shape) keep the export at ~9 s.
FAMILIES = ["armhubert", "fithubert"]
# 16000: the longest (no padding); 11_919 = 400 + 320 * 36 - 1 (one sample short of a 37th
# frame); 8_400 = 400 + 320 * 25 (its 26th frame ends on its last sample).
SAMPLES = [16000, 11_919, 8_400]
# max |ONNX Runtime - PyTorch| / max |PyTorch| per layer and utterance over the valid frames:
# two float32 engines summing in other orders, measured <= 4.1e-6 for each of the four
# families (batch 3, one thread). One frame masked wrongly moves the valid frames by 1.8e-2
# (a frame added) to 1.0 (a frame dropped) of their size (measured, every family), so 1e-5
# separates the two by more than three decades.
SAME = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (PyTorch student, its ONNX Runtime upstream)."""
    folder = tmp_path_factory.mktemp("onnx_lengths")
    out = {}
    for family in FAMILIES:
        model, path = tiny_student(family), folder / f"{family}.onnx"
        export_onnx(model, path, family=family, example_seconds=1.0)
        out[family] = (model, OnnxStudentUpstream(path, threads=1))
    return out


def worst_difference(model, upstream) -> float:
    """max over layers and utterances of |runner - PyTorch| / max |PyTorch| at the valid frames."""
    generator = torch.Generator().manual_seed(0)
    waves = [torch.randn(samples, generator=generator) * 0.1 for samples in SAMPLES]
    batch, lengths = pad_waveforms(waves)
    with torch.no_grad():
        reference = model(batch, lengths).hidden_states
    got = upstream(waves)["hidden_states"]
    worst = 0.0
    for number, samples in enumerate(SAMPLES):
        frames = (samples - 400) // 320 + 1
        for ours, theirs in zip(got, reference, strict=True):
            valid = theirs[number, :frames]  # (T_b, D): every valid frame, the last included
            worst = max(worst, float((ours[number, :frames] - valid).abs().max() / valid.abs().max()))
    return worst


@pytest.mark.parametrize("family", FAMILIES)
def test_the_runner_equals_pytorch_at_every_valid_frame(exported, family):
    assert worst_difference(*exported[family]) <= SAME


@pytest.mark.parametrize("shift", [-1, 1])
@pytest.mark.parametrize("family", FAMILIES)
def test_lengths_fed_off_by_one_are_caught(exported, family, shift, monkeypatch):
    """Planted bug: the runner passes ``lengths + shift`` to the session."""
    model, upstream = exported[family]
    run = OnnxStudentUpstream._run
    monkeypatch.setattr(upstream, "_run", lambda batch, lengths: run(upstream, batch, lengths + shift))
    assert worst_difference(model, upstream) > 100 * SAME
