"""Hostile or careless input files: checkpoints, configs and patch_hub manifests.

Every case here broke on commit 2273f47 (issue 11): a crafted or damaged file must be
refused with an error that names it, never load garbage, exhaust memory or escape the tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from recycle_distill.checkpoint import (
    CheckpointError,
    load_student,
    read_compact,
    safe_torch_load,
    save_compact,
)
from recycle_distill.students.config import ConfigError, StudentConfig, load_config_dict
from recycle_distill.util.literal import MAX_ITEMS, parse_literal
from recycle_distill.training.config import load_train_config

from conftest import load_fixture

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ checkpoints


def _rewrite_zip(source: Path, target: Path, change) -> None:
    """Copy a zip, passing each record's (name, bytes) through ``change``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as new:
        for info in old.infolist():
            new.writestr(info.filename, change(info.filename, old.read(info)))


def test_storage_record_shorter_than_its_tensor_is_refused(tmp_path):
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    full = tmp_path / "full.pt"
    torch.save(fixture["state_dict"], full)
    with zipfile.ZipFile(full) as archive:
        records = sorted((info.file_size, info.filename) for info in archive.infolist() if "/data/" in info.filename)
    size, victim = records[-1]  # the largest storage
    short = tmp_path / "short.pt"
    _rewrite_zip(full, short, lambda name, data: data[: len(data) // 4] if name == victim else data)
    with pytest.raises(CheckpointError) as caught:
        load_student(short, "maskhubert", fixture["config"])
    message = str(caught.value)
    assert message == (f"{short}: truncated or corrupt checkpoint: record '{victim}' holds {size // 4} bytes "
                       f"but its tensor storage declares {size}")
    with pytest.raises(CheckpointError, match="record 'full/data/"):
        safe_torch_load(short)
    # The untouched file still loads exactly.
    model = load_student(full, "maskhubert", fixture["config"])
    for key, value in fixture["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value)


def test_storage_record_missing_is_refused(tmp_path):
    full = tmp_path / "full.pt"
    torch.save({"w": torch.ones(4, 4), "v": torch.zeros(3)}, full)
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(full) as old, zipfile.ZipFile(broken, "w") as new:
        for info in old.infolist():
            if not info.filename.endswith("/data/1"):
                new.writestr(info.filename, old.read(info))
    with pytest.raises(CheckpointError, match=r"record 'full/data/1' is missing"):
        safe_torch_load(broken)


def _junk_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, good)
    data = good.read_bytes()
    files = {
        "truncated zip": data[: len(data) // 2],
        "zip directory only": data[-200:],
        "text": b"this is a text file, not a checkpoint\n" * 3,
        "random bytes": bytes(range(256)) * 7,
        "empty": b"",
        "zip without data.pkl": None,
    }
    paths = {}
    for label, content in files.items():
        path = tmp_path / (label.replace(" ", "_") + ".pt")
        if content is None:
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("x/other", b"nothing")
        else:
            path.write_bytes(content)
        paths[label] = path
    return paths


@pytest.mark.parametrize("label", ["truncated zip", "zip directory only", "text", "random bytes", "empty",
                                   "zip without data.pkl"])
def test_every_unreadable_file_is_a_checkpoint_error_naming_it(tmp_path, label):
    path = _junk_files(tmp_path)[label]
    with pytest.raises(CheckpointError) as caught:
        safe_torch_load(path)
    assert str(caught.value).startswith(f"{path}: ")
    with pytest.raises(CheckpointError) as caught:
        load_student(path, "armhubert", "armhubert_s")
    assert str(path) in str(caught.value)


def test_a_directory_is_reported_as_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match=f"^{tmp_path}: is a directory, not a checkpoint file$"):
        safe_torch_load(tmp_path)
    with pytest.raises(CheckpointError) as caught:  # load_student reads folders as Hugging Face exports
        load_student(tmp_path, "armhubert", "armhubert_s")
    assert str(caught.value).startswith(f"{tmp_path}: ")
    with pytest.raises(CheckpointError, match="^checkpoint not found: "):
        safe_torch_load(tmp_path / "missing.pt")


def _compact_with_metadata(tmp_path: Path, **changes: str) -> Path:
    """A valid tiny compact file, then its metadata changed (header rewritten in place)."""
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    path = tmp_path / "student.safetensors"
    save_compact(str(path), fixture["state_dict"], "maskhubert", fixture["config"])
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header["__metadata__"].update(changes)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + size:])
    return path


@pytest.mark.parametrize("version", ["one", "1.5", "", "-1", "9" * 50, "١"])
def test_non_numeric_format_version_names_the_file(tmp_path, version):
    path = _compact_with_metadata(tmp_path, format_version=version)
    with pytest.raises(CheckpointError) as caught:
        read_compact(str(path))
    assert str(caught.value).startswith(f"{path}: damaged metadata: format_version must be a whole number, got ")


def test_compact_metadata_that_is_not_a_config_is_refused(tmp_path):
    path = _compact_with_metadata(tmp_path, config="[1, 2]")
    with pytest.raises(CheckpointError, match="damaged metadata"):
        read_compact(str(path))


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    from recycle_distill.checkpoint import CheckpointError, load_student

    def status(field):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    # The limit is set after the imports: the current address space plus 1 GiB.
    limit = status("VmSize") + 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak-RSS counter to the current RSS
    except OSError:
        pass
    before = status("VmRSS")
    try:
        load_student(sys.argv[1], "maskhubert")
        outcome = "loaded"
    except CheckpointError as err:
        outcome = "CheckpointError: " + str(err)
    except MemoryError as err:
        outcome = "MemoryError"
    except Exception as err:
        outcome = type(err).__name__ + ": " + str(err)[:300]
    print(json.dumps({"outcome": outcome, "growth": status("VmHWM") - before}))
""")


def test_crafted_compact_asking_for_a_huge_layer_costs_no_memory(tmp_path):
    """Must show 2: a 10^8-wide FFN in the metadata is refused before anything is allocated."""
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    config = dict(fixture["config"], encoder_ffn_embed_dim=10**8)
    path = tmp_path / "huge.safetensors"
    save_compact(str(path), fixture["state_dict"], "maskhubert", config)
    assert path.stat().st_size < 2 * 2**20
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"].startswith(f"CheckpointError: {path}: checkpoint does not match the maskhubert config")
    assert "encoder.layers.0.fc1.weight: checkpoint" in result["outcome"]
    assert result["growth"] < 500 * 2**20, result


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("text", ["[1]*1000000000", "[(1, 2, 3)] * 10**9", "[[1] * 1000] * 1000",
                                  "[1] * 99999 + [2] * 99999", "(" * 3000 + "1" + ")" * 3000,
                                  "-" * 5000 + "1", "[" * 50 + "]" * 50, "[0] * 9999999999999999999999"])
def test_literal_sizes_and_nesting_are_bounded(text):
    with pytest.raises(ValueError) as caught:
        parse_literal(text, "conv_feature_layers")
    message = str(caught.value)
    assert message.startswith("config key 'conv_feature_layers': ")
    assert len(message) < 400


def test_literal_bound_leaves_the_reference_strings_alone():
    assert parse_literal("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    assert len(parse_literal(f"[1] * {MAX_ITEMS - 1}")) == MAX_ITEMS - 1


def test_crafted_conv_literal_in_a_config_is_a_config_error(tmp_path):
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    distiller = dict(fixture["config"], conv_feature_layers="[(8, 2, 2)] * 1000000000")
    with pytest.raises(ConfigError, match="^config: config key 'conv_feature_layers': .* holds more than 100000 values"):
        StudentConfig.from_dict(distiller)
    distiller["conv_feature_layers"] = "[(8, 2, 2)] * 1000"
    with pytest.raises(ConfigError, match="more than 256 encoder or conv layers"):
        StudentConfig.from_dict(distiller)


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi"))


def test_yaml_alias_expansion_is_refused_in_every_config_we_read(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    with pytest.raises(ConfigError, match="expands to more than 1000000 nodes"):
        load_config_dict(path)
    with pytest.raises(ConfigError, match="expands to more than 1000000 nodes"):
        load_train_config(path)
    flow = "{" + ", ".join(line.replace(": ", ": ", 1) for line in BILLION_LAUGHS.splitlines()) + "}"
    with pytest.raises(ConfigError, match="the value is not valid YAML .*expands to more than 1000000 nodes"):
        load_train_config("maskhubert-960", [f"train.gpus={flow}"])
    # Small, legitimate anchors still work.
    ok = tmp_path / "anchors.yaml"
    ok.write_text("common: &c {x: 1}\nfirst: *c\nsecond: *c\n")
    assert load_config_dict(ok)[0]["second"] == {"x": 1}


def test_yaml_nesting_is_bounded(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested more than 100 levels"):
        load_config_dict(path)


def test_error_messages_do_not_print_unbounded_values(tmp_path):
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    with pytest.raises(ConfigError) as caught:
        StudentConfig.from_dict(dict(fixture["config"], encoder_layers=["x" * 10_000] * 10_000))
    assert len(str(caught.value)) < 300
    with pytest.raises(ConfigError) as caught:
        load_train_config("maskhubert-960", ["train.batch_size=" + "[" + "1, " * 100_000 + "1]"])
    assert len(str(caught.value)) < 300
    huge_int = tmp_path / "int.yaml"
    huge_int.write_text("distiller:\n  encoder_layers: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config_dict(huge_int)
    assert len(str(caught.value)) < 400


# ------------------------------------------------------------------ patch_hub manifests

S3PRL_FIXTURE = REPO / "tests" / "data" / "s3prl_tree"


@pytest.fixture
def s3prl_tree(tmp_path):
    """A copy of the S3PRL fixture tree, plus folders outside it that a manifest may name."""
    import shutil

    root = tmp_path / "checkout"
    shutil.copytree(S3PRL_FIXTURE, root, symlinks=True)
    outside = tmp_path / "victim"
    (outside / "__pycache__").mkdir(parents=True)
    (tmp_path / "empty_victim").mkdir()
    return root


def _run_patch_hub(*args) -> int:
    from recycle_distill.cli.patch_hub import main

    return main([str(arg) for arg in args])


def _write_manifest(root: Path, manifest: dict) -> None:
    from recycle_distill.s3prl.patch import MANIFEST_NAME

    (root / "s3prl" / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.mark.parametrize("key", ["{victim}", "../../victim", "../../empty_victim", "upstream/../../../victim",
                                 "downstream", "upstream", "upstream/armhubert/../../../empty_victim"])
@pytest.mark.parametrize("section", ["copied", "created"])
def test_revert_never_removes_a_folder_a_manifest_names_outside_its_own(s3prl_tree, capsys, key, section):
    victim = s3prl_tree.parent / "victim"
    key = key.format(victim=victim)
    _write_manifest(s3prl_tree, {"patched": [], section: {key: {}}})
    code = _run_patch_hub("--revert", s3prl_tree)
    err = capsys.readouterr().err
    assert code == 1
    assert "which patch_hub.py never writes; ignored" in err
    assert victim.is_dir() and (victim / "__pycache__").is_dir()
    assert (s3prl_tree.parent / "empty_victim").is_dir()
    assert (s3prl_tree / "s3prl" / "downstream").is_dir() and (s3prl_tree / "s3prl" / "upstream").is_dir()


def test_a_manifest_entry_with_an_empty_hash_list_removes_nothing(s3prl_tree, capsys):
    upstream = s3prl_tree / "s3prl" / "upstream" / "armhubert"
    (upstream / "__pycache__").mkdir(parents=True)  # an empty folder matched an empty hash list
    _write_manifest(s3prl_tree, {"copied": {"upstream/armhubert": {}}, "created": {"downstream/cif_asr": {}}})
    (s3prl_tree / "s3prl" / "downstream" / "cif_asr").mkdir()
    assert _run_patch_hub("--revert", s3prl_tree) == 1
    assert "entry 'upstream/armhubert' has no file hashes; ignored" in capsys.readouterr().err
    assert upstream.is_dir() and (s3prl_tree / "s3prl" / "downstream" / "cif_asr").is_dir()


def test_a_manifest_entry_through_a_symlink_is_refused(s3prl_tree, capsys):
    victim = s3prl_tree.parent / "victim"
    (victim / "hubconf.py").write_text("x = 1\n")
    (s3prl_tree / "s3prl" / "upstream" / "armhubert").symlink_to(victim)
    from recycle_distill.s3prl.patch import tree_hashes

    _write_manifest(s3prl_tree, {"copied": {"upstream/armhubert": tree_hashes(victim)}})
    assert _run_patch_hub("--revert", s3prl_tree) == 1
    assert "entry 'upstream/armhubert' leads outside the S3PRL tree; ignored" in capsys.readouterr().err
    assert (victim / "hubconf.py").read_text() == "x = 1\n"


@pytest.mark.parametrize("content", ["[1, 2]", "{\"copied\": [\"x\"]}", "{\"patched\": \"hub.py\"}",
                                     "{\"copied\": {\"upstream/armhubert\": {\"a\": 1}}}", "[" * 100_000,
                                     "{\"patched\": [\"/etc/passwd\", \"../x\", 3]}"])
def test_malformed_manifests_are_reported_and_ignored(s3prl_tree, capsys, content):
    from recycle_distill.s3prl.patch import MANIFEST_NAME

    before = sorted(p.as_posix() for p in s3prl_tree.rglob("*"))
    (s3prl_tree / "s3prl" / MANIFEST_NAME).write_text(content)
    assert _run_patch_hub("--revert", s3prl_tree) in (0, 1)
    # Nothing but the junk manifest itself (nothing is left to revert) is touched.
    assert sorted(p.as_posix() for p in s3prl_tree.rglob("*")) == before
    assert _run_patch_hub(s3prl_tree) in (0, 1)  # a patch run still works and rewrites it
    assert _run_patch_hub("--revert", s3prl_tree) == 0
