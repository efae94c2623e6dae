"""``recycle-distill average-checkpoints``: the mean of the inputs' float weights, the rest from the
newest, the inputs recorded; checkpoints of different experiments refused naming the file and key;
inputs never overwritten."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import math
from pathlib import Path

import pytest
import torch

from recycle_distill.checkpoint.safe_load import safe_torch_load
from recycle_distill.cli import main as cli_main
from recycle_distill.recognizer.average import RECORD, AverageError, average_checkpoints

from helpers.s3prl_checkpoints import write_experiment, write_s3prl_checkpoint

FLOAT_WEIGHTS = ("encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.running_mean",
                 "encoder.1.running_var")


def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue().strip()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_average_is_the_mean_of_the_weights_and_the_rest_is_the_newest(tmp_path):
    paths = write_experiment(tmp_path / "exp", steps=(10, 20, 30))
    inputs = [torch.load(path, weights_only=False) for path in paths]
    digests = [_digest(path) for path in paths]
    output = tmp_path / "average.ckpt"
    code, out, err = _cli("average-checkpoints", paths[2], paths[0], paths[1], "-o", output)  # any order
    assert code == 0, err
    assert f"averaged 3 checkpoints (steps 10, 20, 30) -> {output}" in out
    averaged = safe_torch_load(output)
    for name in FLOAT_WEIGHTS:
        mean = sum(state["Downstream"][name].double() for state in inputs) / 3
        torch.testing.assert_close(averaged["Downstream"][name], mean.float(), rtol=1e-6, atol=0)
    mean = (inputs[0]["Featurizer"]["weights"] + inputs[1]["Featurizer"]["weights"]
            + inputs[2]["Featurizer"]["weights"]).double() / 3
    torch.testing.assert_close(averaged["Featurizer"]["weights"], mean.float(), rtol=1e-6, atol=0)
    newest = inputs[2]
    # Not weights: the unit table, the BatchNorm counter and the best dev error come from the newest.
    for name in ("unit_lm_ids", "encoder.1.num_batches_tracked", "best_error"):
        assert torch.equal(averaged["Downstream"][name], newest["Downstream"][name]), name
    assert int(averaged["Downstream"]["encoder.1.num_batches_tracked"]) == 30
    assert averaged["Step"] == 30 and averaged["Epoch"] == 3
    assert vars(averaged["Args"]) == vars(newest["Args"]) and averaged["Config"] == newest["Config"]
    assert averaged["Scheduler"] == newest["Scheduler"]
    assert averaged[RECORD] == [{"file": str(path), "step": step} for path, step in zip(paths, (10, 20, 30))]
    assert set(averaged) == set(newest) | {RECORD}
    assert [_digest(path) for path in paths] == digests  # inputs untouched


def test_a_trained_upstream_is_averaged_too(tmp_path):
    paths = write_experiment(tmp_path / "exp", steps=(10, 20), upstream=True, args={"upstream_trainable": True})
    output = tmp_path / "avg.ckpt"
    average_checkpoints(paths, output)
    weights = [torch.load(path, weights_only=False)["Upstream"]["model.layer.weight"] for path in paths]
    torch.testing.assert_close(safe_torch_load(output)["Upstream"]["model.layer.weight"],
                               ((weights[0].double() + weights[1].double()) / 2).float(), rtol=1e-6, atol=0)


def test_last_n_takes_the_highest_steps_of_the_folder(tmp_path):
    exp = tmp_path / "exp"
    write_experiment(exp, steps=(5, 40, 100, 300))  # "states-5" sorts last as text, first as a step
    write_s3prl_checkpoint(exp / "dev-best.ckpt", 40, 40)
    output = exp / "average-last2.ckpt"
    code, out, err = _cli("average-checkpoints", exp, "--last", "2", "-o", output)
    assert code == 0, err
    assert [item["step"] for item in safe_torch_load(output)[RECORD]] == [100, 300]
    code, _, err = _cli("average-checkpoints", exp, "--last", "5", "-o", tmp_path / "b.ckpt")
    assert (code, err) == (1, f"error: {exp}: holds 4 states-<step>.ckpt, fewer than the 5 asked for "
                                "(S3PRL keeps runner.max_keep of them)")


def _changed(tmp_path, **kwargs) -> tuple[Path, Path]:
    """An input of the reference experiment and one of another (``kwargs`` say how it differs)."""
    first = write_s3prl_checkpoint(tmp_path / "a" / "states-10.ckpt", 10, 10)
    second = write_s3prl_checkpoint(tmp_path / "b" / "states-20.ckpt", 20, 20, **kwargs)
    return first, second


OTHER_MODEL = {"corpus": {"name": "librispeech", "root": "/data"}, "lm": {"path": "/bert"},
               "model": {"d_model": 16, "conformer_layers": 1}}


@pytest.mark.parametrize("change, key, shown", [
    ({"args": {"expdir": "result/downstream/other"}}, "Args.expdir",
     "'result/downstream/other' where {a} has 'result/downstream/tiny'"),
    ({"args": {"upstream": "maskhubert"}}, "Args.upstream", "'maskhubert' where {a} has 'armhubert'"),
    ({"args": {"upstream_ckpt": "other.ckpt"}}, "Args.upstream_ckpt", "'other.ckpt' where {a} has 'tiny.ckpt'"),
    ({"config": {"downstream_expert": OTHER_MODEL}}, "Config.downstream_expert.model.d_model", "16 where {a} has 8"),
    ({"width": 16}, "Downstream.encoder.0.weight (shape, float)", "((16, 4), True) where {a} has ((8, 4), True)"),
    ({"upstream": True}, "its state dicts",
     "['Upstream', 'Featurizer', 'Downstream'] where {a} has ['Featurizer', 'Downstream']"),
])
def test_checkpoints_of_another_experiment_are_refused_naming_file_and_key(tmp_path, change, key, shown):
    first, second = _changed(tmp_path, **change)
    output = tmp_path / "avg.ckpt"
    code, _, err = _cli("average-checkpoints", first, second, "-o", output)
    assert (code, err) == (1, f"error: {second}: {key} is {shown.format(a=first)}: not the same experiment")
    assert not output.exists() and not list(tmp_path.glob(".avg.ckpt.*"))


def test_another_unit_table_is_refused(tmp_path):
    first, second = _changed(tmp_path)
    state = torch.load(second, weights_only=False)
    state["Downstream"]["unit_lm_ids"] = torch.tensor([0, 1, 2, 7, 8])
    torch.save(state, second)
    with pytest.raises(AverageError) as caught:
        average_checkpoints([first, second], tmp_path / "avg.ckpt")
    assert str(caught.value) == (f"{second}: Downstream.unit_lm_ids differs from {first}'s (a table, not a weight: "
                                 "another vocabulary?): not the same experiment")


def test_a_missing_tensor_and_a_non_finite_weight_are_refused(tmp_path):
    first, second = _changed(tmp_path)
    state = torch.load(second, weights_only=False)
    del state["Downstream"]["encoder.0.bias"]
    torch.save(state, second)
    with pytest.raises(AverageError, match=rf"^{second}: Downstream lacks encoder.0.bias, unlike {first}: "):
        average_checkpoints([first, second], tmp_path / "avg.ckpt")
    state = torch.load(first, weights_only=False)
    state["Featurizer"]["weights"][2] = math.nan
    torch.save(state, second)
    with pytest.raises(AverageError) as caught:
        average_checkpoints([first, second], tmp_path / "avg.ckpt")
    assert str(caught.value) == f"{second}: Featurizer.weights holds NaN or infinite values"


def test_a_file_that_is_not_an_s3prl_checkpoint_is_refused(tmp_path):
    first = write_s3prl_checkpoint(tmp_path / "states-10.ckpt", 10, 10)
    student = tmp_path / "student.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, student)
    with pytest.raises(AverageError) as caught:
        average_checkpoints([first, student], tmp_path / "avg.ckpt")
    assert str(caught.value) == f"{student}: not an S3PRL checkpoint (no Args of the right kind)"


def test_best_error_before_the_first_evaluation_is_not_a_weight(tmp_path):
    """cif_asr's best_error is inf until dev is first evaluated: taken from the newest, not refused."""
    paths = write_experiment(tmp_path / "exp", steps=(1, 2))
    for path in paths:
        state = torch.load(path, weights_only=False)
        state["Downstream"]["best_error"] = torch.tensor(math.inf)
        torch.save(state, path)
    average_checkpoints(paths, tmp_path / "avg.ckpt")
    assert float(safe_torch_load(tmp_path / "avg.ckpt")["Downstream"]["best_error"]) == math.inf


def test_outputs_that_are_inputs_or_not_ours_are_refused(tmp_path):
    paths = write_experiment(tmp_path / "exp", steps=(10, 20))
    digests = [_digest(path) for path in paths]
    cases = {
        paths[1]: f"{paths[1]}: is one of the inputs; the inputs are never overwritten",
        tmp_path / "exp" / "states-30.ckpt": (f"{tmp_path / 'exp' / 'states-30.ckpt'}: named like a training checkpoint "
                                              "(S3PRL's max_keep would delete it and --last would take it as one); "
                                              "choose another name"),
    }
    for output, wanted in cases.items():
        code, _, err = _cli("average-checkpoints", *paths, "-o", output, "--force")
        assert (code, err) == (1, f"error: {wanted}")
    link = tmp_path / "link.ckpt"
    link.symlink_to(paths[0])
    code, _, err = _cli("average-checkpoints", *paths, "-o", link, "--force")
    assert (code, err) == (1, f"error: {link}: is one of the inputs; the inputs are never overwritten")
    foreign = tmp_path / "dev-best.ckpt"
    write_s3prl_checkpoint(foreign, 40, 40)
    code, _, err = _cli("average-checkpoints", *paths, "-o", foreign)
    assert (code, err) == (1, f"error: {foreign}: exists; pass --force to replace an earlier average")
    code, _, err = _cli("average-checkpoints", *paths, "-o", foreign, "--force")
    assert (code, err) == (1, f"error: {foreign}: exists and is not an averaged checkpoint (no {RECORD}); "
                              "refusing to replace it even with --force")
    assert [_digest(path) for path in paths] == digests
    earlier = tmp_path / "avg.ckpt"
    assert _cli("average-checkpoints", *paths, "-o", earlier)[0] == 0
    assert _cli("average-checkpoints", *paths, "-o", earlier, "--force")[0] == 0  # an earlier average: replaced


@pytest.mark.parametrize("argv, wanted", [
    (["{a}"], "averaging needs at least 2 checkpoints"),
    (["{a}", "{a}"], "{a}: named twice (as {a})"),
    (["{exp}"], "{exp}: a folder; add --last N to average its last N checkpoints"),
    (["{a}", "--last", "2"], "--last N takes one experiment folder"),
    (["{exp}", "--last", "1"], "--last 1: averaging needs at least 2 checkpoints"),
])
def test_bad_command_lines_are_one_line_errors(tmp_path, argv, wanted):
    paths = write_experiment(tmp_path / "exp", steps=(10, 20))
    names = {"a": paths[0], "exp": tmp_path / "exp"}
    code, _, err = _cli("average-checkpoints", *[item.format(**names) for item in argv], "-o", tmp_path / "o.ckpt")
    assert (code, err) == (1, f"error: {wanted.format(**names)}")


def test_the_average_loads_with_the_launchers_allow_list(tmp_path):
    """S3PRL's ``-e`` loads checkpoints with plain ``torch.load`` (weights-only on torch >= 2.6) after
    the launcher allow-lists ``argparse.Namespace``: the average needs nothing more."""
    from recycle_distill.s3prl.superb.launcher import allow_s3prl_checkpoints

    paths = write_experiment(tmp_path / "exp", steps=(10, 20))
    average_checkpoints(paths, tmp_path / "avg.ckpt")
    allow_s3prl_checkpoints()
    loaded = torch.load(tmp_path / "avg.ckpt", map_location="cpu", weights_only=True)
    assert isinstance(loaded["Args"], argparse.Namespace) and loaded["Step"] == 20
