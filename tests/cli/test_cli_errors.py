"""Every recycle-distill command reports an error as one stderr line and a non-zero exit
(issue 11 bug 7); --debug or RECYCLE_DISTILL_DEBUG=1 shows the traceback instead."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from recycle_distill.checkpoint import CheckpointError, save_compact
from recycle_distill.cli import main

from conftest import load_fixture


def _run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def compact(tmp_path):
    fixture = load_fixture("golden_tiny_armhubert.pt")
    path = tmp_path / "tiny.safetensors"
    save_compact(str(path), fixture["state_dict"], "armhubert", fixture["config"])
    return path


def test_convert_a_compact_file_without_g_reads_the_family_from_it(tmp_path, capsys, compact):
    code, out, err = _run(capsys, "convert", compact, "-o", tmp_path / "again.safetensors")
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {tmp_path / 'again.safetensors'}: armhubert, 398,400 parameters")


def test_convert_a_foreign_safetensors_without_g_is_one_line(tmp_path, capsys):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    code, out, err = _run(capsys, "convert", foreign, "-o", tmp_path / "y.safetensors")
    assert code == 1 and out == ""
    assert _one_error_line(err) == (f"error: {foreign}: a safetensors file without recycle-distill metadata; pass the "
                                    "architecture with -g or convert the checkpoint with 'recycle-distill convert'")


def test_missing_input_is_one_line(tmp_path, capsys):
    code, out, err = _run(capsys, "convert", tmp_path / "missing.ckpt", "-o", tmp_path / "y.safetensors")
    assert code == 1 and out == ""
    assert _one_error_line(err) == f"error: checkpoint not found: {tmp_path / 'missing.ckpt'}"


def test_checkpoint_errors_are_one_line_even_when_the_message_has_several(tmp_path, capsys, compact):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"garbage" * 10)
    code, _, err = _run(capsys, "convert", corrupt, "-g", "armhubert_s", "-o", tmp_path / "y.safetensors")
    assert code == 1
    assert _one_error_line(err).startswith(f"error: {corrupt}: truncated or corrupt checkpoint")
    code, _, err = _run(capsys, "convert", compact, "-g", "armhubert_s", "-o", tmp_path / "z.safetensors")
    line = _one_error_line(err)
    assert code == 1 and "checkpoint does not match the armhubert config; missing keys: " in line


def test_existing_output_is_reported_on_stderr(tmp_path, capsys, compact):
    code, out, err = _run(capsys, "convert", compact, "-o", compact)
    assert (code, out) == (1, "")
    assert _one_error_line(err) == f"error: {compact} exists; pass --force to overwrite it"


def test_debug_flag_and_variable_show_the_traceback(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        main(["--debug", "convert", str(missing), "-o", str(tmp_path / "y")])
    monkeypatch.setenv("RECYCLE_DISTILL_DEBUG", "1")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        main(["convert", str(missing), "-o", str(tmp_path / "y")])


def test_debug_is_not_passed_through_to_wrapped_programs(tmp_path, capsys):
    code, _, err = _run(capsys, "--debug", "patch-hub", tmp_path / "nowhere")
    assert code == 2
    assert err.strip() == f"error: {tmp_path / 'nowhere'} does not exist"


def test_unexpected_errors_name_their_type_and_point_to_debug(capsys, monkeypatch):
    import recycle_distill.cli.convert as convert

    def broken(args):
        raise TypeError("an internal mistake")

    monkeypatch.setattr(convert, "run", broken)
    code, _, err = _run(capsys, "convert", "x", "-o", "y")
    assert code == 1
    assert _one_error_line(err) == "error: TypeError: an internal mistake (run with --debug for the traceback)"


def test_superb_score_errors_go_to_stderr(tmp_path, capsys):
    code, out, err = _run(capsys, "superb-score", tmp_path / "missing.csv")
    assert code == 1 and out == ""
    assert _one_error_line(err)
