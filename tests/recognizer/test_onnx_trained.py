"""The trained digits recognizer exported with ``recycle-distill export <expdir> --format onnx``
(issue 19, deliverable 2, must-show 2): ONNX Runtime gives PyTorch's transcripts (text, tokens
and token times) on the 8 espeak-ng digit utterances, its CIF vectors agree within 1e-5 (relative
to their largest value), and the int8 export's CER is measured and printed (docs/cif_asr.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recycle_distill.downstreams.cif_asr.cif import continuous_integrate_and_fire
from recycle_distill.downstreams.cif_asr.metrics import character_error_rate

from helpers.trained_recognizer import trained_digits_experiment

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from recycle_distill.cli import main  # noqa: E402
from recycle_distill.recognizer import Recognizer  # noqa: E402
from recycle_distill.recognizer.onnx_runner import OnnxRecognizer  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.onnx]

CIF_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    expdir, waves, texts = trained_digits_experiment(tmp_path_factory)
    folders = {}
    for dtype in ("fp32", "int8"):
        folders[dtype] = tmp_path_factory.mktemp("digits_onnx") / dtype
        assert main(["export", str(expdir), "--format", "onnx", "--dtype", dtype, "-o", str(folders[dtype])]) == 0
    return expdir, [w.numpy() for w in waves], texts, folders


def test_onnx_transcripts_equal_pytorch_on_the_digits(digits):
    expdir, waves, texts, folders = digits
    with_torch = Recognizer.from_experiment(expdir).transcribe(waves)
    with_onnx = OnnxRecognizer.from_folder(folders["fp32"], threads=1).transcribe(waves)
    assert [t.text for t in with_torch] == texts
    assert with_onnx == with_torch  # text, tokens, token times, durations


@torch.no_grad()
def test_onnx_cif_vectors_agree_with_pytorch(digits):
    expdir, waves, _, folders = digits
    experiment = Recognizer.from_experiment(expdir).experiment
    runner = OnnxRecognizer.from_folder(folders["fp32"], threads=1)
    worst = 0.0
    for wave in waves:
        tensor = [torch.from_numpy(wave)]
        features = experiment.featurizer(tensor, experiment.upstream(tensor))[0][None]
        hidden, padding, _, alpha = experiment.model.encode(features, torch.tensor([features.shape[1]]))
        reference = continuous_integrate_and_fire(hidden, alpha, padding, threshold=0.99,
                                                  tail_threshold=experiment.decode.tail_threshold)
        cif, cif_lengths, _, _ = runner.acoustic([wave])
        assert cif_lengths.tolist() == reference.fired_lengths.tolist()
        worst = max(worst, float(np.abs(cif - reference.fired.numpy()).max() / reference.fired.abs().max()))
    print(f"\nONNX fp32 vs PyTorch CIF vectors: max |difference| / max |value| = {worst:.2e}")
    assert worst <= CIF_TOLERANCE


def test_int8_export_cer_is_measured(digits):
    _, waves, texts, folders = digits
    hypotheses = [t.text for t in OnnxRecognizer.from_folder(folders["int8"], threads=1).transcribe(waves)]
    cer = character_error_rate(hypotheses, texts)
    print(f"\nint8 ONNX recognizer on the 8 digit utterances: CER {100 * cer:.1f}% (fp32: 0.0%)")
    assert cer <= 0.25
