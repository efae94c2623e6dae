"""A new family takes three steps and no edit elsewhere (docs/development.md, "Adding a family").

The toy family (tests/helpers/toy_family.py) is a module with the block it swaps and one
``Family`` row registered at run time; its ``upstreams/toy/`` folder is generated into a
temporary repository by tools/make_hub_entries.py. Everything else (building, torch.hub, the
S3PRL upstream, safetensors and Hugging Face round trips, the training config) must follow
from the row alone.
"""

from __future__ import annotations

import sys

import pytest
import torch

from recycle_distill import families
from recycle_distill.checkpoint import load_student, save_compact
from recycle_distill import build_student
from recycle_distill.students import FAMILIES
from recycle_distill.students.build import infer_family
from recycle_distill.students.maskhubert import MaskHuBERT
from recycle_distill.training.config import config_help, load_train_config
from recycle_distill.students.config import ConfigError

from conftest import load_fixture
from helpers.tools import import_file, load_tool
from helpers.toy_family import TOY, ReluFeedForwardLayer, ToyHuBERT
from helpers.train_helpers import tiny_config

DISTILLER = load_fixture("golden_tiny_maskhubert.pt")["config"]


@pytest.fixture
def toy(monkeypatch):
    """The toy row in the family table for one test (a plugin would call register_family on import)."""
    monkeypatch.setitem(families.FAMILIES, TOY.name, TOY)  # first, so that monkeypatch removes it afterwards
    assert families.register_family(TOY) is TOY  # the checks a new row goes through
    return TOY


@pytest.fixture
def toy_model(toy):
    torch.manual_seed(0)
    return build_student(DISTILLER, family="toy")


@pytest.fixture
def fresh_upstreams_package():
    """torch.hub imports ``upstreams.<family>.hubconf`` from the repository it loads; this
    repository's own ``upstreams`` package may already sit in sys.modules under that name."""
    def ours():
        return {name: module for name, module in sys.modules.items() if name.split(".")[0] == "upstreams"}

    saved = ours()
    for name in saved:
        del sys.modules[name]
    yield
    for name in ours():
        del sys.modules[name]
    sys.modules.update(saved)


def _outputs(model, wave):
    with torch.no_grad():
        return model(wave[None]).hidden_states


def _upstream_outputs(upstream, wave):
    with torch.no_grad():
        return upstream([wave])["hidden_states"]


def _assert_equal(got, want):
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.fixture
def wave():
    torch.manual_seed(1)
    return torch.randn(8000) * 0.1


def test_the_row_builds_the_toy_class_whose_block_differs(toy_model, wave):
    assert type(toy_model) is ToyHuBERT and "toy" in FAMILIES and FAMILIES["toy"] is ToyHuBERT
    assert all(type(layer) is ReluFeedForwardLayer for layer in toy_model.encoder.layers)
    plain = MaskHuBERT(toy_model.config).eval()
    plain.load_state_dict(toy_model.state_dict())
    # Same keys and weights, other outputs: the swapped block is what runs.
    assert not torch.allclose(_outputs(plain, wave)[-1], _outputs(toy_model, wave)[-1])
    assert infer_family(DISTILLER) == "maskhubert"  # a row without inferred_from is asked for by name


def test_the_row_is_gone_after_the_test():
    assert "toy" not in families.FAMILIES and "toy" not in FAMILIES
    with pytest.raises(ConfigError, match="unknown student family 'toy'; known: armhubert, maskhubert"):
        build_student(DISTILLER, family="toy")


def test_safetensors_round_trip(toy_model, tmp_path, wave):
    path = tmp_path / "toy.safetensors"
    save_compact(str(path), toy_model.state_dict(), "toy", toy_model.config.to_dict())
    loaded = load_student(path, "toy")
    assert type(loaded) is ToyHuBERT
    _assert_equal(_outputs(loaded, wave), _outputs(toy_model, wave))


def test_hugging_face_round_trip(toy_model, tmp_path, wave):
    pytest.importorskip("transformers")
    from recycle_distill.hf_export import export_hf

    info = export_hf(toy_model, "toy", str(tmp_path / "hf"))
    assert info["kind"] == "hubert"
    assert "A ToyHuBERT speech encoder" in (tmp_path / "hf" / "README.md").read_text()
    loaded = load_student(tmp_path / "hf")  # the folder names its family
    assert type(loaded) is ToyHuBERT
    _assert_equal(_outputs(loaded, wave), _outputs(toy_model, wave))


def test_generated_upstream_folder_loads_through_torch_hub_and_s3prl(toy_model, tmp_path, wave,
                                                                    fresh_upstreams_package):
    from recycle_distill.s3prl.upstream import StudentUpstream

    repo = tmp_path / "repo"
    written = load_tool("make_hub_entries").write_files(repo, ["toy"])
    assert {"hubconf.py", "upstreams/toy/hubconf.py", "upstreams/toy/expert.py",
            "upstreams/toy/__init__.py"} <= set(written)
    text = (repo / "upstreams" / "toy" / "hubconf.py").read_text()
    assert "def toy_local(ckpt, model_config=None, *args, **kwargs):" in text
    ckpt = tmp_path / "toy.safetensors"
    save_compact(str(ckpt), toy_model.state_dict(), "toy", toy_model.config.to_dict())
    want = _outputs(toy_model, wave)

    hub = torch.hub.load(str(repo), "toy", source="local", ckpt=str(ckpt), optimize=False)
    assert type(hub.model) is ToyHuBERT
    _assert_equal(_upstream_outputs(hub, wave), want)
    fast = torch.hub.load(str(repo), "toy_local", source="local", ckpt=str(ckpt))  # the CPU inference blocks
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(_upstream_outputs(fast, wave), want))

    _assert_equal(_upstream_outputs(StudentUpstream(str(ckpt), family="toy", optimize=False), wave), want)
    expert = import_file("toy_expert", repo / "upstreams" / "toy" / "expert.py")
    _assert_equal(_upstream_outputs(expert.UpstreamExpert(str(ckpt), optimize=False), wave), want)


def test_training_config_takes_the_rows_objectives(toy, tmp_path):
    config = tiny_config(tmp_path, tmp_path / "out", "maskhubert")
    config["family"] = "toy"
    assert load_train_config(config).objective == "masking"  # the row's first objective
    config["train"]["objective"] = "layer_hints"
    assert load_train_config(config).objective == "layer_hints"
    config["train"]["objective"] = "star"
    refusal = r"^train\.objective: STaR needs layer outputs at the CNN frame rate; not toy$"
    with pytest.raises(ConfigError, match=refusal):
        load_train_config(config)
    assert "family: armhubert, maskhubert, starhubert, fithubert or toy (default" in config_help()
