"""ONNX export and runner behaviours the mutation run of ``inference/onnx_export.py`` and
``onnx_runtime.py`` found untested (docs/development.md, Mutation testing): the opset asked for
is the graph's and the metadata's, the graph declares its dynamic axes by the contract's names,
an int8 export quantizes per output channel and stays close to fp32, the export's info and log
line, and ``last_hidden_state`` is the last of ``hidden_states`` (chunked or not) and equals
PyTorch's on a padded batch.

A test of the export exports by itself (a tiny MaskHuBERT, ~1 s in fp32, ~3 s in int8): mutmut
credits a module-scoped fixture's work to the first test that uses it only, so the runner's tests
alone share one fp32 export.
"""

from __future__ import annotations

import logging

import pytest
import torch

from helpers.tiny_students import tiny_student
from recycle_distill.lab.analysis.precision_error import relative_l2_error
from recycle_distill.students.blocks.masks import pad_waveforms

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from recycle_distill.inference.onnx_export import DEFAULT_OPSET, export_onnx  # noqa: E402
from recycle_distill.inference.onnx_runtime import OnnxStudentUpstream  # noqa: E402

pytestmark = pytest.mark.onnx

FAMILY = "maskhubert"
# 16000: no padding; 11_919 and 8_400 end one sample short of a frame and exactly on one.
SAMPLES = [16000, 11_919, 8_400]
# max |runner - PyTorch| / max |PyTorch| (tests/inference/test_onnx.py, PARITY).
PARITY = 1e-4
# int8 vs fp32 graph, relative L2 per layer over the valid frames: measured 0.0099-0.0110 on
# these noise inputs (tests/inference/test_onnx.py measured <= 0.0115 on speech); 0 would mean
# nothing was quantized.
INT8_REL_L2 = 0.025


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(the tiny model, its fp32 export): for the runner's tests."""
    model = tiny_student(FAMILY)
    path = tmp_path_factory.mktemp("onnx_mutants") / "fp32.onnx"
    export_onnx(model, path, family=FAMILY, example_seconds=0.5)
    return model, path


def _waves() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(samples, generator=generator) * 0.1 for samples in SAMPLES]


def _session_run(path, waves):
    batch, lengths = pad_waveforms(waves)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    stacked, _, mask = session.run(None, {"waveforms": batch.numpy(), "lengths": lengths.numpy()})
    return torch.from_numpy(stacked), torch.from_numpy(mask)


def test_the_default_opset_is_the_graphs_and_the_metadatas(tmp_path):
    path = tmp_path / "default.onnx"
    info = export_onnx(tiny_student(FAMILY), path, family=FAMILY, example_seconds=0.5)
    proto = onnx.load(str(path))
    (default_domain,) = [entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")]
    assert default_domain == DEFAULT_OPSET == 17 and info["opset"] == 17
    props = {prop.key: prop.value for prop in proto.metadata_props}
    assert props["recycle_distill.opset"] == "17" and info["metadata"]["opset"] == "17"


def test_an_opset_asked_for_is_the_graphs_and_the_metadatas(tmp_path):
    path = tmp_path / "opset16.onnx"
    info = export_onnx(tiny_student(FAMILY), path, family=FAMILY, opset=16, example_seconds=0.5)
    proto = onnx.load(str(path))
    assert [entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")] == [16]
    assert {prop.key: prop.value for prop in proto.metadata_props}["recycle_distill.opset"] == "16"
    assert info["opset"] == 16


def test_the_graph_declares_the_contracts_dynamic_axes_by_name(tmp_path):
    model, path = tiny_student(FAMILY), tmp_path / "axes.onnx"
    export_onnx(model, path, family=FAMILY, example_seconds=0.5)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    layers, width = model.config.encoder_layers, 64
    assert {arg.name: arg.shape for arg in session.get_inputs()} == {
        "waveforms": ["batch", "samples"], "lengths": ["batch"]}
    assert {arg.name: arg.shape for arg in session.get_outputs()} == {
        "hidden_states": [layers, "batch", "frames", width], "last_hidden_state": ["batch", "frames", width],
        "padding_mask": ["batch", "frames"]}


def test_the_export_info_and_log_line_name_the_file_family_and_precision(tmp_path, caplog):
    path = tmp_path / "logged.onnx"
    with caplog.at_level(logging.INFO, logger="recycle_distill.inference.onnx_export"):
        info = export_onnx(tiny_student(FAMILY), path, family=FAMILY, example_seconds=0.5)
    assert info["exporter"] == "torch.onnx.export(dynamo=False)"
    assert info["path"] == str(path) and info["bytes"] == path.stat().st_size
    (message,) = [record.getMessage() for record in caplog.records
                  if record.name == "recycle_distill.inference.onnx_export"]
    assert message.startswith(f"exported {path} ({FAMILY}, fp32) in ") and message.endswith(" s")


def test_an_int8_export_quantizes_every_matmul_per_output_channel(exported, tmp_path):
    model, fp32 = exported
    int8 = tmp_path / "int8.onnx"
    info8 = export_onnx(model, int8, family=FAMILY, dtype="int8", example_seconds=0.5)
    assert info8["dtype"] == "int8" and info8["metadata"]["dtype"] == "int8"
    proto = onnx.load(str(int8))
    initializers = {tensor.name: list(tensor.dims) for tensor in proto.graph.initializer}
    quantized = [node for node in proto.graph.node if node.op_type == "MatMulInteger"]
    assert quantized
    for node in quantized:
        weight = initializers[node.input[1]]  # (in, out) int8 weights
        scale = initializers[node.input[1].removesuffix("_quantized") + "_scale"]
        assert scale == [weight[1]], f"{node.name}: scale {scale} for weight {weight}"  # one per output channel
    waves = _waves()
    reference, mask = _session_run(fp32, waves)
    quantized_out, _ = _session_run(int8, waves)
    valid = ~mask
    for index, (ours, ref) in enumerate(zip(quantized_out, reference, strict=True)):
        error = relative_l2_error(ref[valid], ours[valid])
        assert 0 < error <= INT8_REL_L2, f"layer {index}: relative L2 {error:.4f}"


@pytest.mark.parametrize("chunk_seconds", [None, 0.5], ids=["whole", "chunked"])
def test_last_hidden_state_is_the_last_layer(exported, chunk_seconds):
    model, path = exported
    upstream = OnnxStudentUpstream(path, FAMILY, threads=1, chunk_seconds=chunk_seconds,
                                   overlap_seconds=None if chunk_seconds is None else 0.25)
    waves = _waves()
    out = upstream(waves)
    assert torch.equal(out["last_hidden_state"], out["hidden_states"][-1])
    if chunk_seconds is None:  # the whole batch at once: PyTorch's last layer on the same padded batch
        batch, lengths = pad_waveforms(waves)
        with torch.no_grad():
            reference = model(batch, lengths).hidden_states[-1]
        for number, samples in enumerate(SAMPLES):
            frames = (samples - 400) // 320 + 1
            valid = reference[number, :frames]
            difference = (out["last_hidden_state"][number, :frames] - valid).abs().max() / valid.abs().max()
            assert float(difference) <= PARITY


def _with_metadata(source, target, **changes):
    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        key = prop.key.removeprefix("recycle_distill.")
        if key in changes:
            prop.value = changes[key]
    onnx.save(proto, str(target))
    return str(target)


@pytest.mark.parametrize("key, top, output, what", [
    ("num_layers", 256, "hidden_states", "4 layers"),
    ("hidden_dim", 2**31 - 1, "hidden_states", "width 64"),
])
def test_the_largest_whole_number_in_the_metadata_is_read_one_above_is_refused(exported, tmp_path, key, top,
                                                                               output, what):
    _, path = exported
    at_top = _with_metadata(path, tmp_path / "top.onnx", **{key: str(top)})
    with pytest.raises(ValueError) as err:  # read as a number, then found unlike the graph's outputs
        OnnxStudentUpstream(at_top, FAMILY)
    assert str(err.value) == (f"{at_top}: output '{output}' has {what}, but metadata key recycle_distill.{key} "
                              f"says {top}")
    above = _with_metadata(path, tmp_path / "above.onnx", **{key: str(top + 1)})
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(above, FAMILY)
    assert str(err.value) == (f"{above}: metadata key recycle_distill.{key}: expected a whole number from 1 to "
                              f"{top}, got '{top + 1}'")


def test_loading_and_running_print_nothing(exported, capfd):
    # ONNX Runtime prints a banner and retries when a provider name is not one it knows.
    _, path = exported
    upstream = OnnxStudentUpstream(path, FAMILY, threads=1)
    upstream(_waves()[:1])
    assert upstream.session.get_providers() == ["CPUExecutionProvider"]
    assert capfd.readouterr() == ("", "")
