"""The ONNX runner's guards (issue 20, items 10 and 13): its options are checked, a graph runs
only if it looks like one of our exports (no control flow, no outside data, metadata and
outputs as our exports write them), and a run can be given a time limit.

The crafted graphs are small hand-built ones (a strided Conv stands in for the CNN: kernel =
receptive field, stride = downsample rate), so each test builds and loads in milliseconds; one
real tiny export checks that a rate in the metadata that does not match the CNN is caught.
"""

from __future__ import annotations

import time

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from recycle_distill.inference.onnx_export import META_PREFIX, export_onnx  # noqa: E402
from recycle_distill.inference.onnx_runtime import OnnxStudentUpstream  # noqa: E402

from helpers.tiny_students import tiny_student  # noqa: E402

pytestmark = pytest.mark.onnx

RF, RATE = 400, 320
WIDTH = 8


def _metadata(**changes):
    meta = {"family": "maskhubert", "onnx_version": "1", "num_layers": "1", "hidden_dim": str(WIDTH),
            "downsample_rate": str(RATE), "receptive_field": str(RF), "sample_rate": "16000", "dtype": "fp32",
            "opset": "17", "package_version": "0"}
    meta.update({key: value for key, value in changes.items() if value is not None})
    for key in [key for key, value in changes.items() if value is None]:
        meta.pop(key)
    return meta


def crafted(path, *, layers=1, loop_trips=None, hidden_rank=4, hidden_type=TensorProto.FLOAT,
            declare_shapes=True, external=False, **metadata):
    """A graph with our inputs and outputs: a strided Conv (kernel RF, stride RATE, WIDTH channels)
    stacked ``layers`` times; optionally through a Loop of ``loop_trips`` iterations first."""
    weight = helper.make_tensor("conv_w", TensorProto.FLOAT, [WIDTH, 1, RF], [0.001] * (WIDTH * RF))
    nodes = [
        helper.make_node("Unsqueeze", ["waveforms", "axis1"], ["wave3"]),
        helper.make_node("Conv", ["wave3", "conv_w"], ["conv"], strides=[RATE]),
        helper.make_node("Transpose", ["conv"], ["frames0"], perm=[0, 2, 1]),
    ]
    initializers = [weight, helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
                    helper.make_tensor("axis0", TensorProto.INT64, [1], [0]),
                    helper.make_tensor("axis2", TensorProto.INT64, [1], [2])]
    if external:
        weight.data_location = TensorProto.EXTERNAL
        weight.ClearField("float_data")
        weight.external_data.add(key="location", value="../../outside.bin")
    if loop_trips is not None:
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Identity", ["x_in"], ["x_out"])],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None)])
        initializers += [helper.make_tensor("trips", TensorProto.INT64, [], [loop_trips]),
                         helper.make_tensor("keep_going", TensorProto.BOOL, [], [True])]
        nodes.append(helper.make_node("Loop", ["trips", "keep_going", "frames0"], ["frames"], body=body))
    else:
        nodes.append(helper.make_node("Identity", ["frames0"], ["frames"]))
    if not declare_shapes:
        # Slices up to a symbolic end (the sample count) and a Squeeze without axes: sizes (and
        # a rank) that shape inference cannot tell before the graph runs.
        initializers += [helper.make_tensor("start0", TensorProto.INT64, [1], [0]),
                         helper.make_tensor("start1", TensorProto.INT64, [1], [1]),
                         helper.make_tensor("end2", TensorProto.INT64, [1], [2])]
        nodes += [helper.make_node("Shape", ["waveforms"], ["wave_shape"]),
                  helper.make_node("Slice", ["wave_shape", "start1", "end2"], ["samples_end"]),
                  helper.make_node("Slice", ["frames", "start0", "samples_end", "axis2"], ["frames_hidden"])]
    else:
        nodes.append(helper.make_node("Identity", ["frames"], ["frames_hidden"]))
    nodes.append(helper.make_node("Identity", ["frames_hidden"], ["last_hidden_state"]))
    nodes.append(helper.make_node("Unsqueeze", ["frames_hidden", "axis0"], ["one_layer"]))
    nodes.append(helper.make_node("Concat", ["one_layer"] * layers, ["stacked4"], axis=0))
    if hidden_rank == 4 and declare_shapes:
        nodes.append(helper.make_node("Identity", ["stacked4"], ["stacked"]))
    elif hidden_rank == 4:
        nodes.append(helper.make_node("Slice", ["stacked4", "start0", "samples_end", "axis0"], ["stacked"]))
    elif declare_shapes:
        nodes.append(helper.make_node("Identity", ["frames"], ["stacked"]))
    else:
        nodes.append(helper.make_node("Squeeze", ["stacked4"], ["stacked"]))
    if hidden_type == TensorProto.FLOAT:
        nodes.append(helper.make_node("Identity", ["stacked"], ["hidden_states"]))
    else:
        nodes.append(helper.make_node("Cast", ["stacked"], ["hidden_states"], to=hidden_type))
    nodes += [helper.make_node("ReduceSum", ["frames", "axis2"], ["summed"], keepdims=0),
              helper.make_node("IsNaN", ["summed"], ["padding_mask"])]
    hidden_shape = [layers, "batch", "frames", WIDTH][4 - hidden_rank:] if hidden_rank <= 4 else None
    shapes = {"hidden_states": hidden_shape, "last_hidden_state": ["batch", "frames", WIDTH],
              "padding_mask": ["batch", "frames"]}
    outputs = [helper.make_tensor_value_info(name, kind, shapes[name] if declare_shapes else None)
               for name, kind in (("hidden_states", hidden_type), ("last_hidden_state", TensorProto.FLOAT),
                                  ("padding_mask", TensorProto.BOOL))]
    graph = helper.make_graph(
        nodes, "crafted",
        [helper.make_tensor_value_info("waveforms", TensorProto.FLOAT, ["batch", "samples"]),
         helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])],
        outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in _metadata(**{"num_layers": str(layers), **metadata}).items():
        model.metadata_props.add(key=META_PREFIX + key, value=value)
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def real_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_guards") / "maskhubert.onnx"
    export_onnx(tiny_student("maskhubert"), path, family="maskhubert", example_seconds=1.0)
    return path


def _rewrite_metadata(source, target, **changes):
    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        key = prop.key[len(META_PREFIX):]
        if key in changes:
            prop.value = changes[key]
    onnx.save(proto, str(target))
    return str(target)


# ------------------------------------------------------------------------------ item 10: options
def test_a_crafted_graph_that_follows_the_contract_runs(tmp_path):
    path = crafted(tmp_path / "ok.onnx", layers=2)
    upstream = OnnxStudentUpstream(path, "maskhubert", threads=2, timeout=30)
    out = upstream([torch.zeros(RF + 2 * RATE), torch.zeros(RF)])
    assert [tuple(state.shape) for state in out["hidden_states"]] == [(2, 3, WIDTH)] * 2


@pytest.mark.parametrize("threads, message", [
    (0, "threads: expected a whole number from 1 to 256, got 0"),
    (-1, "threads: expected a whole number from 1 to 256, got -1"),
    (10**6, "threads: expected a whole number from 1 to 256, got 1000000"),
    (True, "threads: expected a whole number from 1 to 256, got True (bool)"),
    ("4", "threads: expected a whole number from 1 to 256, got '4' (str)"),
    (2.0, "threads: expected a whole number from 1 to 256, got 2.0 (float)"),
], ids=["zero", "negative", "million", "bool", "str", "float"])
def test_threads_must_be_a_sane_whole_number(tmp_path, threads, message):
    path = crafted(tmp_path / "ok.onnx")
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path, threads=threads)
    assert str(err.value) == message


@pytest.mark.parametrize("timeout, message", [
    (0, "timeout: expected a number of seconds above 0 (or None for no limit), got 0"),
    (-1.5, "timeout: expected a number of seconds above 0 (or None for no limit), got -1.5"),
    (float("inf"), "timeout: expected a number of seconds above 0 (or None for no limit), got inf"),
    ("10", "timeout: expected a number of seconds above 0 (or None for no limit), got '10'"),
    (True, "timeout: expected a number of seconds above 0 (or None for no limit), got True"),
])
def test_timeout_must_be_a_positive_number(tmp_path, timeout, message):
    path = crafted(tmp_path / "ok.onnx")
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path, timeout=timeout)
    assert str(err.value) == message


def test_a_graph_with_a_loop_is_refused_before_it_runs(tmp_path):
    path = crafted(tmp_path / "loop.onnx", loop_trips=10**15)
    started = time.monotonic()
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path, "maskhubert")
    assert time.monotonic() - started < 30
    assert str(err.value) == (
        f"{path}: the graph holds a 'Loop' node (control flow), which recycle-distill exports never write; "
        f"pass allow_any_graph=True to run it anyway (see docs/inference.md, 'What an ONNX file is trusted with')")


def test_a_graph_that_reads_an_outside_file_is_refused(tmp_path):
    path = crafted(tmp_path / "external.onnx", external=True)
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path)
    assert str(err.value) == (
        f"{path}: the graph reads tensor 'conv_w' from another file ('../../outside.bin'), which recycle-distill "
        f"exports never do; pass allow_any_graph=True to run it anyway (see docs/inference.md, "
        f"'What an ONNX file is trusted with')")


def test_a_time_limit_stops_an_endless_graph(tmp_path):
    path = crafted(tmp_path / "loop.onnx", loop_trips=10**15)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        OnnxStudentUpstream(path, "maskhubert", allow_any_graph=True, timeout=0.5)
    assert time.monotonic() - started < 30
    assert str(err.value) == f"{path}: the graph ran longer than timeout=0.5 s and was stopped"


def test_allow_any_graph_must_be_a_bool(tmp_path):
    path = crafted(tmp_path / "ok.onnx")
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path, allow_any_graph="yes")
    assert str(err.value) == "allow_any_graph: expected True or False, got 'yes' (str)"


# -------------------------------------------------------------------- item 13: metadata, outputs
@pytest.mark.parametrize("changes, message", [
    ({"downsample_rate": "0"}, "metadata key recycle_distill.downsample_rate: expected a whole number from 1 to "
                               "960000, got '0'"),
    ({"receptive_field": "-1"}, "metadata key recycle_distill.receptive_field: expected a whole number from 1 to "
                                "960000, got '-1'"),
    ({"num_layers": "0"}, "metadata key recycle_distill.num_layers: expected a whole number from 1 to 256, got '0'"),
    ({"hidden_dim": "wide"}, "metadata key recycle_distill.hidden_dim: expected a whole number from 1 to "
                             "2147483647, got 'wide'"),
    ({"downsample_rate": "9" * 5000}, "metadata key recycle_distill.downsample_rate: expected a whole number "
                                      "from 1 to 960000, got '" + "9" * 76 + "..."),
    ({"sample_rate": "8000"}, "metadata key recycle_distill.sample_rate: '8000', but recycle-distill students "
                              "take 16000 Hz audio"),
    ({"dtype": "fp16"}, "metadata key recycle_distill.dtype: 'fp16' is not a precision recycle-distill exports "
                        "(fp32, int8)"),
    ({"hidden_dim": None}, "its metadata lacks recycle_distill.hidden_dim"),
])
def test_metadata_unlike_our_exports_is_refused(tmp_path, changes, message):
    path = crafted(tmp_path / "meta.onnx", **changes)
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path)
    assert str(err.value) == f"{path}: {message}"


def test_a_family_name_in_the_metadata_is_bounded_and_escaped(tmp_path):
    path = crafted(tmp_path / "family.onnx", family="x\nERROR: fake" + "y" * 10**5)
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path, "maskhubert")
    assert str(err.value) == (
        f"{path}: metadata key recycle_distill.family: 'x\\nERROR: fake{'y' * 62}... is not a student family of "
        f"this package (armhubert, maskhubert, starhubert, fithubert)")


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_type": TensorProto.INT64},
     "output 'hidden_states' is tensor(int64), but recycle-distill exports write tensor(float)"),
    ({"hidden_rank": 3},
     "output 'hidden_states' has rank 3, but recycle-distill exports write rank 4 (num_layers, batch, frames, "
     "hidden_dim)"),
    ({"layers": 2, "num_layers": "3"},
     "output 'hidden_states' has 2 layers, but metadata key recycle_distill.num_layers says 3"),
    ({"hidden_dim": "9"},
     "output 'hidden_states' has width 8, but metadata key recycle_distill.hidden_dim says 9"),
])
def test_declared_outputs_unlike_the_metadata_are_refused(tmp_path, kwargs, message):
    path = crafted(tmp_path / "outputs.onnx", **kwargs)
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path)
    assert str(err.value) == f"{path}: {message}"


@pytest.mark.parametrize("kwargs, got", [
    ({"hidden_rank": 3}, "(3, 8)"),
    ({"hidden_dim": "9"}, "(1, 1, 3, 8)"),
    ({"layers": 2, "num_layers": "3"}, "(2, 1, 3, 8)"),
])
def test_outputs_that_do_not_fit_the_metadata_when_run_are_refused(tmp_path, kwargs, got):
    # Outputs declared without shapes: only running the graph tells.
    path = crafted(tmp_path / "undeclared.onnx", declare_shapes=False, **kwargs)
    layers = kwargs.get("num_layers", str(kwargs.get("layers", 1)))
    width = kwargs.get("hidden_dim", str(WIDTH))
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path)
    assert str(err.value) == (
        f"{path}: output 'hidden_states' has shape {got} for a batch of 1 x {RF + 2 * RATE} samples; its metadata "
        f"(num_layers {layers}, hidden_dim {width}, receptive_field {RF}, downsample_rate {RATE}) give "
        f"({layers}, 1, 3, {width})")


def test_rates_in_the_metadata_that_do_not_match_the_cnn_are_refused(real_export, tmp_path):
    path = _rewrite_metadata(real_export, tmp_path / "rate.onnx", downsample_rate="160")
    with pytest.raises(ValueError) as err:
        OnnxStudentUpstream(path, "maskhubert")
    assert str(err.value) == (
        f"{path}: output 'hidden_states' has shape (4, 1, 2, 64) for a batch of 1 x 720 samples; its metadata "
        f"(num_layers 4, hidden_dim 64, receptive_field 400, downsample_rate 160) give (4, 1, 3, 64)")


def test_a_real_export_passes_every_guard(real_export):
    upstream = OnnxStudentUpstream(real_export, "maskhubert", timeout=60)
    out = upstream([torch.zeros(16000), torch.zeros(8000)])
    assert len(out["hidden_states"]) == 4 and tuple(out["last_hidden_state"].shape) == (2, 49, 64)
