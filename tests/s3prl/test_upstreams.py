"""The S3PRL upstreams and torch.hub entries: contract, Featurizer, Hub downloads, bad input."""

import functools
import http.server
import importlib
import pathlib
import threading

import pytest
import torch

from recycle_distill.checkpoint import save_compact
from recycle_distill.students.waveforms import WaveformError

from conftest import load_fixture, write_lightning_checkpoint, write_yaml

pytestmark = pytest.mark.s3prl

REPO = str(pathlib.Path(__file__).resolve().parents[2])
FAMILIES = ["armhubert", "maskhubert", "starhubert", "fithubert"]


def _hubconf(family):
    return importlib.import_module(f"recycle_distill.upstreams.{family}.hubconf")


def _tiny_checkpoint(tmp_path, family):
    """(ckpt, model_config, fixture or None) in the released Lightning format for each family."""
    if family == "fithubert":
        from recycle_distill import build_student

        config = {
            "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(48, 2, 2)] * 2",
            "encoder_layers": 3, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 32,
            "encoder_attention_heads": 4, "pred_head_final_dim": 24, "enable_tr_layer": True,
            "tr_reduce_factor": 2, "tr_conv1d_kernel": 2, "conv_pos_groups": 4, "pred_layer_id": "[2]",
        }
        torch.manual_seed(0)
        state = build_student(config, family="fithubert").state_dict()
        return write_lightning_checkpoint(tmp_path / "fit.ckpt", state), write_yaml(tmp_path / "fit.yaml", {"distiller": config}), None
    fixture = load_fixture(f"golden_tiny_{family}.pt")
    ckpt = write_lightning_checkpoint(tmp_path / f"{family}.ckpt", fixture["state_dict"])
    return ckpt, write_yaml(tmp_path / f"{family}.yaml", {"distiller": fixture["config"]}), fixture


@pytest.mark.parametrize("family", FAMILIES)
def test_local_entry_returns_the_s3prl_contract(tmp_path, family):
    ckpt, config, fixture = _tiny_checkpoint(tmp_path, family)
    upstream = getattr(_hubconf(family), f"{family}_local")(str(ckpt), str(config))
    assert isinstance(upstream, torch.nn.Module)
    assert upstream.get_downsample_rates("hidden_states") == 320
    waves = fixture["wavs"] if fixture else [torch.randn(16000) * 0.1, torch.randn(11200) * 0.1]
    with torch.no_grad():
        output = upstream(waves)
    hidden = output["hidden_states"]
    assert len(hidden) == upstream.model.config.encoder_layers
    assert len({tuple(h.shape) for h in hidden}) == 1 and hidden[0].shape[:2] == (2, 49)
    assert torch.equal(output["last_hidden_state"], hidden[-1])
    if family == "armhubert":  # batched, the reference pairs reused maps across the batch: compare singles
        for index, wave in enumerate(waves):
            with torch.no_grad():
                single = upstream([wave])["hidden_states"]
            for ours, reference in zip(single, fixture["outputs"]["single"][index]["hidden_states"], strict=True):
                assert (ours - reference).abs().max() <= 1e-5
    elif fixture is not None:
        for ours, reference in zip(hidden, fixture["outputs"]["hidden_states"], strict=True):
            assert (ours - reference).abs().max() <= 1e-5
    else:  # FitHuBERT: the unpadded utterance equals the student itself on it alone, by value
        from recycle_distill.checkpoint import load_student

        model = load_student(ckpt, "fithubert", str(config)).eval()
        with torch.no_grad():
            alone = model(waves[0].unsqueeze(0)).hidden_states
        for ours, expected in zip(hidden, alone, strict=True):
            assert (ours[:1] - expected).abs().max() <= 1e-5
            assert expected.abs().max() > 0


def test_s3prl_featurizer_runs_over_our_upstream(tmp_path):
    from s3prl.upstream.interfaces import Featurizer

    ckpt, config, fixture = _tiny_checkpoint(tmp_path, "armhubert")
    upstream = _hubconf("armhubert").armhubert(str(ckpt), str(config))
    featurizer = Featurizer(upstream, "hidden_states", upstream_device="cpu")
    assert featurizer.layer_num == 4 and featurizer.downsample_rate == 320
    with torch.no_grad():
        features = featurizer(fixture["wavs"], upstream(fixture["wavs"]))
    assert [tuple(f.shape) for f in features] == [(49, 64), (35, 64)]


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_hub_load_local_for_every_family(tmp_path, family):
    ckpt, config, fixture = _tiny_checkpoint(tmp_path, family)
    upstream = torch.hub.load(REPO, family, source="local", ckpt=str(ckpt), model_config=str(config),
                              reference_batched_reuse=True)
    assert type(upstream).__name__ == "StudentUpstream" and upstream.model.family == family
    if family == "armhubert":
        with torch.no_grad():
            output = upstream(fixture["wavs"])
        assert (output["last_hidden_state"] - fixture["outputs"]["last_hidden_state"]).abs().max() <= 1e-5


def test_root_hubconf_lists_every_entry():
    # torch.hub.list has no source='local'; this applies its rule (public callables of hubconf.py).
    module = torch.hub._import_module("hubconf", str(pathlib.Path(REPO) / "hubconf.py"))
    entries = {name for name in dir(module) if callable(getattr(module, name)) and not name.startswith("_")}
    for family in FAMILIES:
        assert {family, f"{family}_local", f"{family}_url", f"{family}_onnx"} <= entries
    assert {"armhubert_960h", "armhubert_s_100h", "armhubert_s_960h", "armwavlm_s_100h", "armwavlm_s_960h", "maskhubert_960h"} <= entries


def test_compact_checkpoint_loads_without_config(tmp_path):
    fixture = load_fixture("golden_tiny_maskhubert.pt")
    path = tmp_path / "mask.safetensors"
    save_compact(str(path), fixture["state_dict"], "maskhubert", fixture["config"])
    upstream = torch.hub.load(REPO, "maskhubert", source="local", ckpt=str(path))
    with torch.no_grad():
        assert (upstream(fixture["wavs"])["last_hidden_state"] - fixture["outputs"]["last_hidden_state"]).abs().max() <= 1e-5


def _populate_hub_cache(cache: pathlib.Path, filename: str, source: pathlib.Path) -> None:
    """The on-disk layout huggingface_hub itself writes: blobs, a snapshot and refs/main."""
    repo = cache / "models--sungnyun--ARMHuBERT"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(source.read_bytes())


def test_named_release_entry_uses_the_real_hub_client_offline(tmp_path, monkeypatch):
    from recycle_distill import build_student

    torch.manual_seed(0)
    model = build_student("maskhubert")
    ckpt = write_lightning_checkpoint(tmp_path / "MaskHuBERT-960h.ckpt", model.state_dict())
    cache = tmp_path / "hf_cache"
    _populate_hub_cache(cache, "MaskHuBERT-960h.ckpt", ckpt)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    upstream = _hubconf("maskhubert").maskhubert_960h()
    assert upstream.model.config.encoder_ffn_embed_dim == 640
    assert torch.equal(upstream.model.state_dict()["mask_emb"], model.state_dict()["mask_emb"])
    # An entry whose file is not cached fails offline in one line naming the release and the ways on.
    from recycle_distill.checkpoint.fetch import ReleaseUnavailable

    with pytest.raises(ReleaseUnavailable, match=r"^armhubert_960h: .*\(HF_HUB_OFFLINE is set and it is not in the "
                                                 r"Hugging Face cache\); continue with ckpt="):
        _hubconf("armhubert").armhubert_960h()


def test_url_entry_downloads_from_a_loopback_server_and_caches(tmp_path, monkeypatch):
    ckpt, config, _ = _tiny_checkpoint(tmp_path, "maskhubert")
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{ckpt.name}"
        first = _hubconf("maskhubert").maskhubert_url(url, str(config))
        _hubconf("maskhubert").maskhubert_url(url, str(config))
        assert len(requests) == 1  # second call used the cache
        _hubconf("maskhubert").maskhubert_url(url, str(config), refresh=True)
        assert len(requests) == 2
    finally:
        server.shutdown()
    assert first.model.family == "maskhubert"


@pytest.mark.parametrize(
    "waves, message",
    [
        ([torch.zeros(0)], "empty waveform"),
        ([torch.randn(399)], "shorter than the CNN's receptive field \\(400 samples"),
        ([torch.tensor([float("nan")] * 1000)], "NaN or Inf"),
        ([torch.randn(2, 16000)], "1-D mono waveform"),
        ([torch.zeros(16000, dtype=torch.int16)], "float tensor"),
        (torch.randn(2, 16000), "list of 1-D waveforms"),
        ([], "empty list"),
    ],
)
def test_bad_waveforms_get_clear_errors(tmp_path, waves, message):
    ckpt, config, _ = _tiny_checkpoint(tmp_path, "maskhubert")
    upstream = _hubconf("maskhubert").maskhubert(str(ckpt), str(config))
    with pytest.raises(WaveformError, match=message):
        upstream(waves)


def test_config_missing_required_keys_is_reported_by_the_entry(tmp_path):
    ckpt, _, fixture = _tiny_checkpoint(tmp_path, "maskhubert")
    broken = dict(fixture["config"])
    del broken["encoder_layers"]
    with pytest.raises(ValueError, match="missing required distiller key\\(s\\): encoder_layers"):
        _hubconf("maskhubert").maskhubert(str(ckpt), str(write_yaml(tmp_path / "b.yaml", {"distiller": broken})))


@pytest.mark.parametrize("order", [(torch.float64, torch.float32), (torch.float16, torch.bfloat16),
                                   (torch.bfloat16, torch.float64), (torch.float32, torch.float16)])
def test_every_float_dtype_is_computed_in_the_model_dtype_whatever_the_order(tmp_path, order):
    """Issue 11: a float64/float16/bfloat16 waveform used to fail depending on the item order."""
    ckpt, config, fixture = _tiny_checkpoint(tmp_path, "maskhubert")
    upstream = _hubconf("maskhubert").maskhubert_local(str(ckpt), model_config=str(config))
    upstream.eval()
    waves = [(torch.randn(16000) * 0.1).to(order[0]), (torch.randn(12000) * 0.1).to(order[1])]
    with torch.no_grad():
        output = upstream(waves)["last_hidden_state"]
        expected = upstream([wave.float() for wave in waves])["last_hidden_state"]
    assert output.dtype == torch.float32
    assert torch.equal(output, expected)


def test_downsample_rate_comes_from_the_model(tmp_path):
    """Issue 11: the expert hard-coded 320; it now reports its CNN's stride product."""
    from recycle_distill import build_student

    fixture = load_fixture("golden_tiny_maskhubert.pt")
    released = tmp_path / "mask.safetensors"
    save_compact(str(released), fixture["state_dict"], "maskhubert", fixture["config"])
    assert torch.hub.load(REPO, "maskhubert", source="local", ckpt=str(released)).get_downsample_rates("hidden_states") == 320
    config = dict(fixture["config"], conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 5")
    model = build_student({"distiller": config}, "maskhubert")
    path = tmp_path / "fast.safetensors"
    save_compact(str(path), model.state_dict(), "maskhubert", model.config.to_dict())
    upstream = torch.hub.load(REPO, "maskhubert", source="local", ckpt=str(path))
    assert upstream.get_downsample_rates("hidden_states") == 160
    with torch.no_grad():
        frames = upstream([torch.randn(16000) * 0.1])["last_hidden_state"].shape[1]
    assert frames == 16000 // 160 - 1  # the receptive field (400 samples) costs about one frame


def test_hub_entries_are_generated_from_the_released_table(monkeypatch, tmp_path):
    """Issue 11: each hubconf.py and the root hubconf repeated the published checkpoints."""
    import inspect

    from recycle_distill import families
    from helpers.tools import import_file, load_tool

    monkeypatch.setitem(families.RELEASES, "starhubert_test", families.Release(
        "starhubert_test", "starhubert", "STaRHuBERT-test.ckpt", "starhubert", "HuBERT Base", "LibriSpeech 960h", None,
        "STaRHuBERT for this test.", default=True))
    (tmp_path / "hubconf.py").write_text(load_tool("make_hub_entries").render_hubconf("starhubert"))
    module = import_file("some.hubconf", tmp_path / "hubconf.py")
    entries = {name: value for name, value in vars(module).items() if inspect.isfunction(value)}
    assert sorted(entries) == ["starhubert", "starhubert_local", "starhubert_onnx", "starhubert_test", "starhubert_url"]
    assert entries["starhubert_test"].__doc__ == "STaRHuBERT for this test."
    assert entries["starhubert"].__doc__.endswith("without one, the published starhubert_test checkpoint.")
    assert str(inspect.signature(entries["starhubert_local"])) == "(ckpt, model_config=None, *args, **kwargs)"
    assert {f.__module__ for f in entries.values()} == {"some.hubconf"}
    fetched = []
    monkeypatch.setattr("recycle_distill.s3prl.hub_entries.load_released",
                        lambda name, *args, **kwargs: fetched.append(name) or "upstream")
    assert entries["starhubert_test"]() == entries["starhubert"]() == "upstream"
    assert fetched == ["starhubert_test", "starhubert_test"]
    hubconf = _hubconf("armhubert")
    assert {name for name in vars(hubconf) if not name.startswith("_") and callable(getattr(hubconf, name))} == {
        "armhubert", "armhubert_local", "armhubert_url", "armhubert_onnx", "armhubert_960h", "armhubert_s_100h",
        "armhubert_s_960h", "armwavlm_s_100h", "armwavlm_s_960h"}
