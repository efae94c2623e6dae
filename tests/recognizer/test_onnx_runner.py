"""The torch-free ONNX recognizer runner: it runs where ``import torch`` fails, checks what a
folder claims before trusting it (one line naming the file and the key), and the export writes
its folder atomically and never over a folder that is not ours; int8 keeps the CIF in float32.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers.tiny_recognizer import noise_waves, tiny_recognizer

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from recycle_distill.recognizer import onnx_export  # noqa: E402
from recycle_distill.recognizer.onnx_export import export_experiment_onnx, export_recognizer_onnx  # noqa: E402
from recycle_distill.recognizer.onnx_runner import OnnxRecognizer  # noqa: E402
from recycle_distill.util.atomic import OutputError  # noqa: E402

pytestmark = pytest.mark.onnx

@pytest.fixture(scope="module")
def tiny():
    return tiny_recognizer(seed=1)


def _export(tiny, folder, **options):
    return export_recognizer_onnx(str(folder), student=tiny.student, family=tiny.family,
                                  layer_weights=tiny.layer_weights, recognizer=tiny.model, vocab=tiny.vocab,
                                  beam_size=3, **options)


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runner") / "rec"
    _export(tiny, folder)
    return folder


@pytest.fixture
def copy(exported, tmp_path):
    """A copy of the exported folder a test may damage."""
    target = tmp_path / "rec"
    shutil.copytree(exported, target)
    return target


def test_runner_works_where_importing_torch_fails(exported, tmp_path):
    waves = noise_waves([16000, 24000], seed=5)
    np.save(tmp_path / "waves.npy", np.stack([np.pad(w, (0, 24000 - len(w))) for w in waves]))
    expected = [t.to_json() for t in OnnxRecognizer.from_folder(exported, threads=1).transcribe(waves)]
    script = textwrap.dedent(f"""
        import json, sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchaudio"):
                    raise ImportError("torch is not installed here")
        sys.meta_path.insert(0, NoTorch())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker did not block torch")
        import numpy as np
        from recycle_distill.recognizer.onnx_runner import OnnxRecognizer
        batch = np.load({str(tmp_path / 'waves.npy')!r})
        waves = [batch[0, :16000], batch[1]]
        out = [t.to_json() for t in OnnxRecognizer.from_folder({str(exported)!r}, threads=1).transcribe(waves)]
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "torchaudio"))
        print(json.dumps({{"transcripts": out, "torch_modules": loaded}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["torch_modules"] == []
    assert report["transcripts"] == expected


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("changes, message", [
    ({"version": 2}, r"recognizer.json: key 'version' is 2; this package reads version 1"),
    ({"format": "something-else"}, r"recognizer.json: key 'format' is 'something-else', not "),
    ({"beam_size": 0}, r"recognizer.json: key 'beam_size' must be a whole number from 1 to 10000, got 0"),
    ({"threshold": float("nan")}, r"recognizer.json: key 'threshold' must be a number from 0 to 1, got nan"),
    ({"banned": [0, 99]}, r"recognizer.json: key 'banned' must be a list of unit indices below vocab_size 11"),
    ({"d_model": 48}, r"acoustic.onnx: 'cif' has size 32 on axis 2, but recognizer.json key 'd_model' gives 48"),
    ({"vocab_size": 12}, r"vocab.json: 11 units, but recognizer.json key 'vocab_size'"),
    ({"decoder_layers": 3}, r"decoder_step.onnx: '(past_keys|keys)' has size 2 on axis 0, but recognizer.json key "
                            r"'decoder_layers' gives 3"),
])
def test_folder_claims_are_checked_before_use(copy, changes, message):
    _edit_json(copy / "recognizer.json", **changes)
    with pytest.raises(ValueError, match=message):
        OnnxRecognizer.from_folder(copy)


def test_vocabulary_must_fit_the_decoder_output(copy):
    vocab = json.loads((copy / "vocab.json").read_text())
    vocab["units"], vocab["lm_ids"] = vocab["units"][:-1], vocab["lm_ids"][:-1]
    (copy / "vocab.json").write_text(json.dumps(vocab))
    _edit_json(copy / "recognizer.json", vocab_size=10)
    with pytest.raises(ValueError, match=r"decoder_step.onnx: 'log_probs' has size 11 on axis 1, but recognizer.json "
                                         r"key 'vocab_size' gives 10"):
        OnnxRecognizer.from_folder(copy)


def test_a_swapped_graph_is_refused_by_its_outputs(copy):
    shutil.copyfile(copy / "decoder_step.onnx", copy / "acoustic.onnx")
    with pytest.raises(ValueError, match=r"acoustic.onnx: the graph's inputs are .*; an exported recognizer's "
                                         r"acoustic.onnx has waveforms, lengths"):
        OnnxRecognizer.from_folder(copy)


def test_control_flow_is_refused_unless_allowed(copy):
    from onnx import TensorProto, helper

    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "branch", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["c"], ["out"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "looping", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
                              [helper.make_tensor("x", TensorProto.FLOAT, [1], [0.0])])
    onnx.save(helper.make_model(graph), copy / "acoustic.onnx")
    with pytest.raises(ValueError, match=r"acoustic.onnx: the graph holds a 'If' node \(control flow\)"):
        OnnxRecognizer.from_folder(copy)
    with pytest.raises(ValueError, match=r"acoustic.onnx: the graph's inputs are \['c'\]"):
        OnnxRecognizer.from_folder(copy, allow_any_graph=True)  # checked, then still refused by its signature


@pytest.mark.parametrize("options, message", [
    ({"threads": 0}, r"threads: expected a whole number from 1 to 256, got 0"),
    ({"beam": "3"}, r"beam: expected a whole number from 1 to 10000"),
    ({"batch_seconds": 0}, r"batch_seconds: expected a number of seconds above 0, got 0"),
    ({"batch_seconds": float("inf")}, r"batch_seconds: expected a number of seconds above 0, got inf"),
    ({"allow_any_graph": "yes"}, r"allow_any_graph"),
])
def test_options_are_checked(exported, options, message):
    with pytest.raises(ValueError, match=message):
        OnnxRecognizer.from_folder(exported, **options)


def test_missing_parts_are_named(copy, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere: no such folder"):
        OnnxRecognizer.from_folder(tmp_path / "nowhere")
    os.remove(copy / "decoder_step.onnx")
    with pytest.raises(FileNotFoundError, match=r"decoder_step.onnx: missing from the exported recognizer"):
        OnnxRecognizer.from_folder(copy)
    os.remove(copy / "recognizer.json")
    with pytest.raises(FileNotFoundError, match=r"recognizer.json: no such file"):
        OnnxRecognizer.from_folder(copy)


def test_unusable_recordings_are_skipped_and_counted(exported):
    skipped = []
    out = OnnxRecognizer.from_folder(exported, threads=1).transcribe(
        [np.zeros(0, np.float32), np.full(8000, np.nan, np.float32), noise_waves([8000])[0]], skipped=skipped)
    assert len(out) == 1
    assert [s.reason for s in skipped] == ["empty", "non-finite samples (NaN or inf)"]


def test_export_refuses_a_folder_that_is_not_ours(tiny, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match=r"mine: not empty and not an exported recognizer"):
        _export(tiny, folder)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_export_replaces_an_earlier_export_only_when_complete(tiny, copy, monkeypatch):
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    real = onnx_export._write_graph

    def fail_on_the_decoder(module, example, name, folder, dtype, opset):
        if name == "decoder_step.onnx":
            raise OSError("disk full")
        real(module, example, name, folder, dtype, opset)

    monkeypatch.setattr(onnx_export, "_write_graph", fail_on_the_decoder)
    with pytest.raises(OSError, match="disk full"):
        _export(tiny, copy)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
    (copy / "extra.bin").write_bytes(b"x")
    monkeypatch.setattr(onnx_export, "_write_graph", real)
    with pytest.raises(OutputError, match=r"holds files an export does not write \(extra.bin\)"):
        _export(tiny, copy)
    os.remove(copy / "extra.bin")
    _export(tiny, copy, max_steps=77)  # an earlier export of ours is replaced
    assert json.loads((copy / "recognizer.json").read_text())["max_steps"] == 77


def test_int8_quantizes_the_matmuls_but_not_the_cif(tiny, tmp_path):
    info = _export(tiny, tmp_path / "int8", dtype="int8")
    assert info["metadata"]["dtype"] == "int8"
    nodes = onnx.load(str(tmp_path / "int8" / "acoustic.onnx")).graph.node
    quantized = [n.name for n in nodes if n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger",
                                                        "DynamicQuantizeLinear")]
    assert quantized and not [name for name in quantized if name.startswith("/cif/")]
    assert [n.op_type for n in nodes if n.name.startswith("/cif/") and "MatMul" in n.op_type] == ["MatMul"]
    waves = noise_waves([16000, 20000], seed=2)
    assert len(OnnxRecognizer.from_folder(tmp_path / "int8", threads=1).transcribe(waves)) == 2


def test_export_refuses_a_vocabulary_of_another_size(tiny, tmp_path):
    from recycle_distill.downstreams.cif_asr.text import UnitVocabulary

    smaller = UnitVocabulary(tiny.vocab.units[:-1], tiny.vocab.lm_ids[:-1], "en", "x")
    with pytest.raises(ValueError, match=r"the recognizer's decoder has 11 outputs but the vocabulary 10 units"):
        export_recognizer_onnx(str(tmp_path / "x"), student=tiny.student, family=tiny.family,
                               layer_weights=tiny.layer_weights, recognizer=tiny.model, vocab=smaller)
    assert not (tmp_path / "x").exists()


def test_an_experiment_on_another_upstream_is_refused_with_the_reason(tiny, tmp_path):
    import types

    import torch

    experiment = types.SimpleNamespace(checkpoint=tmp_path / "dev-best.ckpt", upstream=torch.nn.Linear(2, 2),
                                       featurizer=None, model=tiny.model, vocab=tiny.vocab, decode=None)
    with pytest.raises(ValueError, match=r"dev-best.ckpt: its upstream \(Linear\) is not a recycle-distill student; "
                                         r"the ONNX export traces our students only"):
        export_experiment_onnx(experiment, str(tmp_path / "out"))


def test_export_command_takes_an_experiment_only_as_onnx(tmp_path, capsys, copy):
    from recycle_distill.cli import main

    experiment = tmp_path / "expdir"
    experiment.mkdir()
    (experiment / "vocab.json").write_text("{}")
    assert main(["export", str(experiment), "--format", "hf", "-o", str(tmp_path / "out")]) == 1
    assert "expdir is a cif_asr experiment; it exports as --format onnx" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "a.txt").write_text("x")
    assert main(["export", str(experiment), "--format", "onnx", "-o", str(taken)]) == 1
    assert "taken: not empty and not an exported recognizer" in capsys.readouterr().err
    assert (taken / "a.txt").read_text() == "x"
    assert main(["export", str(experiment), "--format", "onnx", "-o", str(copy)]) == 1
    assert "rec holds an exported recognizer; pass --force to replace it" in capsys.readouterr().err


def test_transcribe_command_runs_the_onnx_folder_with_its_options(exported, tmp_path, monkeypatch):
    import soundfile

    from recycle_distill.cli import main

    wave = noise_waves([20000], seed=9)[0]
    soundfile.write(tmp_path / "a.wav", wave, 16000)
    built = []
    real = OnnxRecognizer.from_folder.__func__

    def record(cls, folder, **options):
        built.append(options)
        return real(cls, folder, **options)

    monkeypatch.setattr(OnnxRecognizer, "from_folder", classmethod(record))
    prefix = str(tmp_path / "out")
    assert main(["transcribe", "--onnx", str(exported), str(tmp_path / "a.wav"), "-o", prefix,
                 "--beam", "1", "--batch-seconds", "5", "--no-progress"]) == 0
    assert built == [{"beam": 1, "batch_seconds": 5.0}]
    [record_line] = [json.loads(line) for line in open(prefix + ".jsonl")]
    direct = OnnxRecognizer(exported, beam=1).transcribe([wave])[0]
    assert record_line["text"] == direct.text
    assert [t["token"] for t in record_line["tokens"]] == [t.token for t in direct.tokens]
