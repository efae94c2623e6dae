"""A student folder whose config.json asks for an overflowing size is one line naming the file
and the key (issue 20, item 17), never a raw OverflowError / TypeError / RuntimeError.

Two places hold sizes: the ``recycle_distill`` block (what our loader builds from) and, in a
plain ``HubertModel`` folder, the transformers keys (``hidden_size``, ``num_hidden_layers``, ...:
what transformers builds from). The first is checked like any student config, with a bound on
every whole number; the second must say what the first says. A compact file's metadata gets
the same bound.
"""

from __future__ import annotations

import pytest

from recycle_distill import build_student
from recycle_distill.checkpoint import CheckpointError, load_student
from recycle_distill.students.config import ConfigError

from helpers.json_files import edit_config
from helpers.tiny_students import tiny_student

HUGE = 10**30


def _folder(tmp_path, family):
    from recycle_distill.hf_export import export_hf

    folder = tmp_path / f"{family}-hf"
    export_hf(tiny_student(family), family, str(folder))
    return folder


@pytest.mark.parametrize("family", ["maskhubert", "armhubert"])
@pytest.mark.parametrize("key, value, message", [
    ("encoder_embed_dim", HUGE, f"config key 'encoder_embed_dim': must be at most 2147483647, got {HUGE}"),
    ("encoder_ffn_embed_dim", HUGE, f"config key 'encoder_ffn_embed_dim': must be at most 2147483647, got {HUGE}"),
    ("conv_pos", 2**70, f"config key 'conv_pos': must be at most 2147483647, got {2**70}"),
    ("conv_feature_layers", [[HUGE, 10, 5]],
     f"config key 'conv_feature_layers': sizes must be at most 2147483647, got ({HUGE}, 10, 5)"),
    ("encoder_layers", 10**9, "config: more than 256 encoder or conv layers"),
])
def test_an_overflowing_size_in_the_recycle_distill_block_names_the_file_and_key(tmp_path, family, key, value,
                                                                                  message):
    folder = _folder(tmp_path, family)

    def change(config):
        config["recycle_distill"]["distiller"][key] = value
        if "distiller" in config:  # the remote-code folder's copy for transformers
            config["distiller"][key] = value

    path = edit_config(folder, change)
    with pytest.raises(CheckpointError) as err:
        load_student(folder)
    assert str(err.value) == f"{path}: {message}"


@pytest.mark.parametrize("key, value, ours", [
    ("hidden_size", HUGE, "encoder_embed_dim"),
    ("num_hidden_layers", 10**9, "encoder_layers"),
    ("intermediate_size", -1, "encoder_ffn_embed_dim"),
    ("num_attention_heads", "12", "encoder_attention_heads"),
    ("num_conv_pos_embeddings", True, "conv_pos"),
])
def test_transformers_sizes_that_disagree_with_the_block_are_refused(tmp_path, key, value, ours):
    folder = _folder(tmp_path, "maskhubert")
    expected = tiny_student("maskhubert").config.to_dict()[ours]
    path = edit_config(folder, lambda config: config.__setitem__(key, value))
    with pytest.raises(CheckpointError) as err:
        load_student(folder)
    assert str(err.value) == (f"{path}: key '{key}' is {value!r}, but the recycle_distill block says {ours} "
                              f"{expected}; config.json was changed after the export")


def test_transformers_conv_lists_that_disagree_with_the_block_are_refused(tmp_path):
    folder = _folder(tmp_path, "maskhubert")
    dims = [spec[0] for spec in tiny_student("maskhubert").config.conv_feature_layers]
    path = edit_config(folder, lambda config: config.__setitem__("conv_dim", [HUGE]))
    with pytest.raises(CheckpointError) as err:
        load_student(folder)
    assert str(err.value) == (f"{path}: key 'conv_dim' is [{HUGE}], but the recycle_distill block "
                              f"says conv_feature_layers dims {dims}; config.json was changed after the export")


def test_a_remote_code_folder_whose_two_configs_differ_is_refused(tmp_path):
    folder = _folder(tmp_path, "armhubert")
    path = edit_config(folder, lambda config: config["distiller"].__setitem__("encoder_embed_dim", HUGE))
    with pytest.raises(CheckpointError) as err:
        load_student(folder)
    assert str(err.value) == (f"{path}: key 'distiller' differs from the recycle_distill block's distiller; "
                              f"config.json was changed after the export")


def test_an_untouched_folder_still_loads(tmp_path):
    for family in ("maskhubert", "armhubert"):
        assert load_student(_folder(tmp_path, family)).family == family


def test_build_student_names_an_overflowing_key():
    with pytest.raises(ConfigError) as err:
        build_student("armhubert", encoder_ffn_embed_dim=HUGE)
    assert str(err.value) == (f"preset 'armhubert': config key 'encoder_ffn_embed_dim': must be at most 2147483647, "
                              f"got {HUGE}")


def test_a_compact_file_with_an_overflowing_size_names_the_file_and_key(tmp_path):
    from recycle_distill.checkpoint import save_compact

    model = tiny_student("maskhubert")
    path = tmp_path / "huge.safetensors"
    save_compact(str(path), model.state_dict(), "maskhubert", dict(model.config.to_dict(), encoder_embed_dim=HUGE))
    with pytest.raises(CheckpointError) as err:
        load_student(path, "maskhubert")
    assert str(err.value) == (f"{path}: its stored config is refused: config dict: config key 'encoder_embed_dim': "
                              f"must be at most 2147483647, got {HUGE}")


def test_sizes_within_the_bound_whose_product_overflows_name_the_file(tmp_path):
    from recycle_distill.checkpoint import save_compact

    model = tiny_student("maskhubert")
    big = 2**31 - 1  # a prime: heads 1, groups 1; the positional conv (E, E, K) overflows int64
    config = dict(model.config.to_dict(), encoder_embed_dim=big, encoder_attention_heads=1, conv_pos_groups=1,
                  conv_pos=big)
    path = tmp_path / "product.safetensors"
    save_compact(str(path), model.state_dict(), "maskhubert", config)
    with pytest.raises(CheckpointError) as err:
        load_student(path, "maskhubert")
    text = str(err.value)
    assert text.startswith(f"{path}: its config asks for a model too large to build (") and "\n" not in text
