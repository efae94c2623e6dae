"""The exported recognizer (issue 19, deliverable 2) against the PyTorch one, on a tiny recognizer
with random weights (equality needs no training; the trained digits recognizer is in
``test_onnx_trained.py``).

The folder is exported ONCE per module from a padded batch of two 2 s waveforms and run at other
shapes (batch 1 and 3, 0.6 s to 3.1 s), so a shape a trace would freeze shows up.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch

from recycle_distill.downstreams.cif_asr.cif import continuous_integrate_and_fire
from recycle_distill.downstreams.cif_asr.config import DecodeConfig

from helpers.tiny_recognizer import noise_waves, reference_batch, tiny_recognizer

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from recycle_distill.recognizer.onnx_cif import SCAN_STEPS, cummin_as_scan  # noqa: E402
from recycle_distill.recognizer.onnx_export import (  # noqa: E402
    _Cif, export_recognizer_onnx, featurizer_layer_weights,
)
from recycle_distill.recognizer.onnx_runner import OnnxRecognizer  # noqa: E402
from recycle_distill.recognizer.token_times import build_transcript  # noqa: E402

pytestmark = pytest.mark.onnx

BEAM = 4
DECODE = DecodeConfig(beam_size=BEAM)
# Batches run through both paths (sample counts), none of them the traced 2 x 2 s example.
BATCHES = ([16000], [49600], [30000, 9600, 17000])
# max |ONNX - PyTorch| of the CIF vectors over the reference's max |value| (measured: <= 2e-6).
CIF_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def tiny():
    return tiny_recognizer()


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx_rec") / "fp32"
    info = export_recognizer_onnx(str(folder), student=tiny.student, family=tiny.family,
                                  layer_weights=tiny.layer_weights, recognizer=tiny.model, vocab=tiny.vocab,
                                  beam_size=BEAM)
    return folder, info


def test_acoustic_graph_matches_pytorch_cif(tiny, exported):
    runner = OnnxRecognizer.from_folder(exported[0], threads=1)
    for number, lengths in enumerate(BATCHES):
        waves = noise_waves(lengths, seed=number)
        _, alpha, frames, fired, fired_lengths = reference_batch(tiny, waves, DECODE)
        cif, cif_lengths, onnx_alpha, onnx_frames = runner.acoustic(waves)
        assert cif_lengths.tolist() == fired_lengths.tolist()
        assert onnx_frames.tolist() == frames.tolist()
        assert cif.shape == tuple(fired.shape)
        scale = float(fired.abs().max())
        assert np.abs(cif - fired.numpy()).max() <= CIF_TOLERANCE * scale, lengths
        assert np.abs(onnx_alpha - alpha.numpy()).max() <= 1e-5


def test_transcripts_and_token_times_equal_pytorch(tiny, exported):
    """Batched as the PyTorch recognizer batches (longest first, padded): the same units, the
    same text and the same token times, which come from the graph's CIF weights."""
    runner = OnnxRecognizer.from_folder(exported[0], threads=1, batch_seconds=10.0)
    waves = noise_waves([30000, 9600, 17000, 16000], seed=7)
    transcripts = runner.transcribe(waves)
    order = sorted(range(len(waves)), key=lambda i: -len(waves[i]))  # one batch, longest first
    hypotheses, alpha, frames, _, _ = reference_batch(tiny, [waves[i] for i in order], DECODE)
    frame_seconds = tiny.model.encoder.output_rate / 16000
    decoded_units = 0
    for row, index in enumerate(order):
        expected = build_transcript(hypotheses[row], alpha[row, : frames[row]].numpy(), len(waves[index]) / 16000,
                                    tiny.vocab, frame_seconds, 0.99, DECODE.tail_threshold)
        assert transcripts[index] == expected
        decoded_units += len(hypotheses[row])
    assert decoded_units >= 4  # the random recognizer does emit units, so the comparison means something


def test_each_recording_alone_equals_pytorch_alone(tiny, exported):
    runner = OnnxRecognizer.from_folder(exported[0], threads=1, batch_seconds=0.01)  # one recording per batch
    waves = noise_waves([12000, 40000, 7000], seed=3)
    texts = [t.text for t in runner.transcribe(waves)]
    expected = [tiny.vocab.text(tiny.vocab.decode(reference_batch(tiny, [w], DECODE)[0][0])) for w in waves]
    assert texts == expected


def test_featurizer_layer_norm_is_in_the_graph(tiny, tmp_path):
    export_recognizer_onnx(str(tmp_path / "norm"), student=tiny.student, family=tiny.family,
                           layer_weights=tiny.layer_weights, recognizer=tiny.model, vocab=tiny.vocab, normalize=True)
    waves = noise_waves([20000, 12000], seed=4)
    _, alpha, _, fired, fired_lengths = reference_batch(tiny, waves, DECODE, normalize=True)
    _, plain_alpha, _, _, _ = reference_batch(tiny, waves, DECODE)
    cif, cif_lengths, onnx_alpha, _ = OnnxRecognizer.from_folder(tmp_path / "norm", threads=1).acoustic(waves)
    assert cif_lengths.tolist() == fired_lengths.tolist()
    assert np.abs(onnx_alpha - alpha.numpy()).max() <= 1e-5 < np.abs(onnx_alpha - plain_alpha.numpy()).max()
    assert np.abs(cif - fired.numpy()).max() <= CIF_TOLERANCE * float(fired.abs().max())


def _featurizer(**attributes):
    return types.SimpleNamespace(**{"feature_selection": "hidden_states", "layer_selection": None,
                                    "normalize": False, **attributes})


def test_featurizer_weights_follow_s3prl_selection():
    weights = torch.tensor([0.0, 1.0, 2.0])
    softmax, normalize = featurizer_layer_weights(_featurizer(weights=weights, normalize=True), 3)
    assert torch.allclose(softmax, torch.softmax(weights, 0)) and normalize
    # A single layer is not a weighted sum: S3PRL applies no layer norm to it.
    assert featurizer_layer_weights(_featurizer(layer_selection=-2, normalize=True), 3) == (
        pytest.approx(torch.tensor([0.0, 1.0, 0.0])), False)
    one_hot, _ = featurizer_layer_weights(_featurizer(feature_selection="last_hidden_state"), 3)
    assert one_hot.tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=r"featurizer has 2 layer weights; the upstream has 3 hidden states"):
        featurizer_layer_weights(_featurizer(weights=torch.zeros(2)), 3)
    with pytest.raises(ValueError, match=r"featurizer layer_selection 5: the upstream has 3 hidden states"):
        featurizer_layer_weights(_featurizer(layer_selection=5), 3)
    with pytest.raises(ValueError, match=r"featurizer selects logits; the ONNX export covers"):
        featurizer_layer_weights(_featurizer(feature_selection="logits"), 3)


def test_folder_holds_the_graphs_vocabulary_and_metadata(exported, tiny):
    folder, info = exported
    assert sorted(p.name for p in folder.iterdir()) == ["acoustic.onnx", "decoder_step.onnx", "recognizer.json",
                                                        "vocab.json"]
    meta = info["metadata"]
    assert (meta["vocab_size"], meta["d_model"], meta["beam_size"], meta["upstream"]) == (len(tiny.vocab), 32, BEAM,
                                                                                          "armhubert")
    assert meta["frame_rate"] == tiny.model.encoder.output_rate == 1280


def test_exported_cif_is_loop_free(exported):
    for name in ("acoustic.onnx", "decoder_step.onnx"):
        ops = {node.op_type for node in onnx.load(str(exported[0] / name)).graph.node}
        assert not ops & {"Loop", "Scan", "If", "SequenceMap"}, name


def _cif_graph(path, threshold=0.99, tail=0.4):
    """The CIF submodule alone as an ONNX graph: (hidden, alpha, lengths) -> (fired, fired_lengths)."""
    import onnxruntime

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cif = _Cif(threshold, tail)

        def forward(self, hidden, alpha, lengths):
            return self.cif(hidden, alpha, torch.arange(alpha.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1))

    example = (torch.randn(2, 9, 4), torch.rand(2, 9), torch.tensor([9, 5]))
    axes = {"h": {0: "b", 1: "t"}, "a": {0: "b", 1: "t"}, "l": {0: "b"}, "f": {0: "b", 1: "n"}, "n": {0: "b"}}
    with warnings.catch_warnings(), cummin_as_scan(17):
        warnings.simplefilter("ignore")
        torch.onnx.export(Graph(), example, str(path), dynamo=False, input_names=["h", "a", "l"],
                          output_names=["f", "n"], dynamic_axes=axes, opset_version=17)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda h, a, l: session.run(None, {"h": h.numpy(), "a": a.numpy(), "l": l.numpy()})


def _check_cif(run, hidden, alpha, lengths, threshold=0.99, tail=0.4):
    padding = torch.arange(alpha.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
    alpha, hidden = alpha.masked_fill(padding, 0.0), hidden.masked_fill(padding.unsqueeze(-1), 0.0)
    reference = continuous_integrate_and_fire(hidden, alpha, padding, threshold=threshold, tail_threshold=tail)
    fired, fired_lengths = run(hidden, alpha, lengths)
    assert fired_lengths.tolist() == reference.fired_lengths.tolist()
    rows = reference.fired.shape[1]
    np.testing.assert_allclose(fired[:, :rows], reference.fired.numpy(), atol=1e-6, rtol=0)
    assert not fired[:, rows:].any()  # the fixed-size output is zero after the firings


def test_cif_graph_equals_the_pytorch_cif_on_random_weights(tmp_path):
    run = _cif_graph(tmp_path / "cif.onnx")
    generator = torch.Generator().manual_seed(0)
    for _ in range(25):
        batch = int(torch.randint(1, 5, (), generator=generator))
        frames = int(torch.randint(1, 70, (), generator=generator))
        alpha = torch.rand(batch, frames, generator=generator) * float(torch.rand((), generator=generator)) * 1.3
        lengths = torch.randint(1, frames + 1, (batch,), generator=generator)
        lengths[0] = frames
        _check_cif(run, torch.randn(batch, frames, 4, generator=generator), alpha, lengths)


def test_cif_graph_scans_past_the_traced_length(tmp_path):
    """Traced on 9 frames, run on 1000 (ten scan steps): the cumulative minimum is not cut short."""
    run = _cif_graph(tmp_path / "cif.onnx")
    alpha = torch.full((1, 1000), 0.3)
    alpha[0, 500:] = 0.999  # every frame fires once from here: the count follows the frames
    _check_cif(run, torch.randn(1, 1000, 4), alpha, torch.tensor([1000]))
    assert 2**SCAN_STEPS >= 10**7


@pytest.mark.parametrize("weights, threshold, tail", [
    ([0.2, 0.25], 0.99, 0.45),  # the leftover is exactly float32(0.45): no tail, as the float32 loop
    ([0.11, 0.88, 0.3], 0.99, 0.4),  # 0.11 + 0.88 is below 0.99 in float64 but fires in float32
    ([0.0, 0.0, 0.0], 0.99, 0.4),  # nothing fires: one all-zero row
])
def test_cif_graph_decides_float32_ties_as_pytorch(tmp_path, weights, threshold, tail):
    run = _cif_graph(tmp_path / "cif.onnx", threshold, tail)
    alpha = torch.tensor([weights], dtype=torch.float32)
    _check_cif(run, torch.randn(1, len(weights), 4), alpha, torch.tensor([len(weights)]), threshold, tail)


# Weights on a decimal grid where the original's float32 loop fires at another frame than the
# closed form (exact sums) does: found by search with cif_asr.firing_rule, kept as data.
LOOP_DECIDES_OTHERWISE = [
    [0.15, 0.26, 0.04, 0.25, 0.09, 0.2, 0.14],
    [0.77, 0.56, 0.47, 0.91, 0.35, 0.11, 0.23, 0.58, 0.01, 0.89],
    [0.22, 0.06, 0.71, 0.04, 0.36, 0.11, 0.57, 0.39],
]


@pytest.mark.parametrize("weights", LOOP_DECIDES_OTHERWISE)
def test_runner_settles_what_the_float32_loop_decides_otherwise(tmp_path, weights):
    """The loop-free graph decides by the closed form; the PyTorch CIF hands such an utterance to
    the float32 loop; the runner's NumPy settlement gives the PyTorch vectors back."""
    from recycle_distill.recognizer.onnx_near_ties import settle_near_ties

    run = _cif_graph(tmp_path / "cif.onnx")
    alpha = torch.tensor([weights], dtype=torch.float32)
    hidden = torch.randn(1, len(weights), 4, generator=torch.Generator().manual_seed(0))
    padding = torch.zeros(1, len(weights), dtype=torch.bool)
    reference = continuous_integrate_and_fire(hidden, alpha, padding, threshold=0.99, tail_threshold=0.4)
    fired, fired_lengths = run(hidden, alpha, torch.tensor([len(weights)]))
    graph_vectors = fired[:, : int(fired_lengths.max())]
    differs = (graph_vectors.shape != tuple(reference.fired.shape)
               or not np.allclose(graph_vectors, reference.fired.numpy(), atol=1e-5))
    assert differs  # the case is real: the closed form alone gives other vectors
    settled, lengths, redone = settle_near_ties(graph_vectors, fired_lengths, hidden.numpy(), alpha.numpy(),
                                                np.array([len(weights)]), 0.99, 0.4)
    assert redone == [0] and lengths.tolist() == reference.fired_lengths.tolist()
    np.testing.assert_allclose(settled, reference.fired.numpy(), atol=1e-6, rtol=0)


def test_settlement_leaves_what_the_closed_form_decides():
    from recycle_distill.recognizer.onnx_near_ties import settle_near_ties

    cif = np.ones((2, 3, 4), np.float32)
    alpha = np.array([[0.5, 0.7, 0.3], [0.3, 0.3, 0.0]], np.float32)
    out, lengths, redone = settle_near_ties(cif, np.array([2, 1]), np.zeros((2, 3, 4), np.float32), alpha,
                                            np.array([3, 2]), 0.99, 0.4)
    assert redone == [] and out is cif and lengths.tolist() == [2, 1]
