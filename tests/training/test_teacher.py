"""The distillation teacher: S3PRL's own model classes, every source, masking, failures."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from recycle_distill.checkpoint.safe_load import CheckpointError
from recycle_distill.training.teacher import (
    SpanMaskConfig,
    Teacher,
    TeacherCheckpointError,
    compute_mask_indices,
    convert_to_s3prl,
    load_teacher,
    read_teacher_checkpoint,
    resolve_layer_mapping,
)

DATA = Path(__file__).parents[1] / "data" / "teacher"
TINY = DATA / "tiny_hubert_fairseq.pt"
ATOL = 1e-5

# The recipe's teacher section (tests/data/conf/armhubert-960.yaml).
RECIPE_MASKING = {"mask_length": 10, "mask_prob": 0.8, "mask_selection": "uniform", "mask_other": 0.0,
                  "no_mask_overlap": True, "mask_min_space": 1}


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(DATA / "teacher_outputs.pt", weights_only=True)


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return load_teacher(TINY)


def assert_close_where_defined(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Compare only where the reference holds finite values."""
    assert actual.shape == expected.shape, f"{what}: {tuple(actual.shape)} vs {tuple(expected.shape)}"
    defined = torch.isfinite(expected)
    error = (actual[defined] - expected[defined]).abs().max().item()
    assert error <= ATOL, f"{what}: max abs error {error:.2e}"


def assert_outputs_match(out, ref_entry: dict, what: str) -> None:
    assert len(out.layer_results) == len(ref_entry["layer_results"])
    for index, (layer, expected) in enumerate(zip(out.layer_results, ref_entry["layer_results"])):
        assert_close_where_defined(layer, expected["x"].transpose(0, 1), f"{what} layer {index}")
    assert_close_where_defined(out.last_hidden_state, ref_entry["x"], f"{what} x")
    assert torch.equal(out.padding_mask, ref_entry["frame_padding_mask"]), f"{what} frame_padding_mask"


def batch_and_lengths(reference: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return reference["src"], (~reference["wav_padding_mask"]).sum(dim=1)


# ------------------------------------------------------------------ fairseq checkpoint
def test_fairseq_teacher_is_s3prl_hubert_without_fairseq(teacher: Teacher) -> None:
    from s3prl.upstream.hubert.hubert_model import HubertModel

    assert type(teacher.model) is HubertModel
    assert "fairseq" not in sys.modules
    assert (teacher.kind, teacher.num_layers, teacher.embed_dim, teacher.downsample_rate) == ("hubert", 4, 96, 320)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.model.training


def test_reproduces_reference_batched_and_single(teacher: Teacher, reference: dict) -> None:
    src, lengths = batch_and_lengths(reference)
    assert_outputs_match(teacher(src, lengths), reference["batch"], "batch")
    for index, wave in enumerate(reference["wavs"]):
        assert_outputs_match(teacher(wave.unsqueeze(0)), reference["single"][index], f"single[{index}]")


def test_hubert_padding_rule_and_s3prl_forward(teacher: Teacher, reference: dict) -> None:
    src, lengths = batch_and_lengths(reference)
    out = teacher(src, lengths)
    # 11,200 samples padded to 16,000: 35 valid frames (ALL-samples-padding rule), not 34.
    assert (~out.padding_mask).sum(dim=1).tolist() == [49, 35]
    assert torch.equal(teacher.frame_padding_mask(lengths, src.shape[1]), out.padding_mask)
    assert teacher.num_frames(src.shape[1]) == out.padding_mask.shape[1] == 49
    # Our driving of the submodules equals S3PRL's own extract_features exactly.
    with torch.no_grad():
        own, own_mask = teacher.model.extract_features(src, padding_mask=reference["wav_padding_mask"])
    # Our CPU channels-last CNN path reorders fp32 sums: equal to S3PRL's own forward within 1e-5.
    assert torch.allclose(own, out.last_hidden_state, atol=1e-5) and torch.equal(own_mask, out.padding_mask)
    # Outputs are usable as loss targets (no_grad, not inference_mode).
    prediction = torch.zeros_like(out.layer_results[-1], requires_grad=True)
    torch.nn.functional.mse_loss(prediction, out.layer_results[-1]).backward()
    assert prediction.grad is not None


def test_masked_and_unmasked_in_one_batch_equal_two_passes(reference: dict) -> None:
    teacher = load_teacher(TINY, mask_overrides=RECIPE_MASKING)
    src, lengths = batch_and_lengths(reference)
    padding = teacher.frame_padding_mask(lengths, src.shape[1])
    mask = teacher.compute_mask_indices(padding, generator=0)
    masked, unmasked = teacher.forward_masked_and_unmasked(src, lengths, mask)
    separate_masked = teacher(src, lengths, mask_indices=mask)
    separate_unmasked = teacher(src, lengths)
    for joint, alone in ((masked, separate_masked), (unmasked, separate_unmasked)):
        for a, b in zip(joint.layer_results, alone.layer_results):
            assert (a - b).abs().max().item() <= ATOL
        assert torch.equal(joint.padding_mask, alone.padding_mask)
    assert (masked.layer_results[0] - unmasked.layer_results[0]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="teacher's frame grid"):
        teacher.forward_masked_and_unmasked(src, lengths, mask[:, :-1])


def test_reproduces_original_training_step_masks_and_targets() -> None:
    """The original trainer's step: same mask from the same seed, same masked/unmasked targets."""
    step = torch.load(DATA / "teacher_masked_step.pt", weights_only=True)
    teacher = load_teacher(TINY, mask_overrides=step["teacher_cfg"])
    lengths = (~step["padding_mask"]).sum(dim=1)
    padding = teacher.frame_padding_mask(lengths, step["x"].shape[1])
    assert torch.equal(padding, step["teacher_frame_padding_mask"])
    # Same RNG stream as fairseq after np.random.seed(step_seed) -> the very same mask.
    mask = teacher.compute_mask_indices(padding, generator=np.random.RandomState(step["step_seed"]))
    assert torch.equal(mask, step["mask_indices"])
    masked, unmasked = teacher.forward_masked_and_unmasked(step["x"], lengths, mask)
    for name, out in (("masked", masked), ("unmasked", unmasked)):
        for index, (layer, expected) in enumerate(zip(out.layer_results, step[f"teacher_{name}_layer_results_x"])):
            assert_close_where_defined(layer, expected.transpose(0, 1), f"{name} layer {index}")


# ------------------------------------------------------------------ span masking
def test_mask_config_comes_from_checkpoint_or_overrides(teacher: Teacher) -> None:
    assert teacher.mask_config.selection == "static" and not teacher.mask_config.no_overlap  # the ckpt's cfg
    recipe = load_teacher(TINY, mask_overrides={"teacher_model": "x.pt", **RECIPE_MASKING}).mask_config
    assert recipe == SpanMaskConfig(0.8, 10, "uniform", 0.0, True, 1)


def test_span_mask_invariants_and_reproducibility(teacher: Teacher) -> None:
    padding = torch.zeros(3, 120, dtype=torch.bool)
    padding[1, 90:] = True
    padding[2, 50:] = True
    config = SpanMaskConfig()  # uniform, no overlap, min_space 1
    for seed in range(5):
        mask = compute_mask_indices(padding, config, generator=seed)
        assert mask.dtype == torch.bool and mask.shape == (3, 120)
        assert not (mask & padding).any()
        counts = mask.sum(dim=1)
        assert (counts == counts[0]).all() and counts[0] > 0
        assert torch.equal(mask, compute_mask_indices(padding, config, generator=seed))
    torch.manual_seed(3)
    first = teacher.compute_mask_indices((2, 60), 0.5, 4)
    torch.manual_seed(3)
    assert torch.equal(first, teacher.compute_mask_indices((2, 60), 0.5, 4))


@pytest.mark.parametrize("selection,no_overlap", [("static", False), ("uniform", False), ("uniform", True)])
def test_span_mask_equals_s3prl_algorithm(monkeypatch, selection: str, no_overlap: bool) -> None:
    from s3prl.upstream.wav2vec2 import wav2vec2_model

    # S3PRL's no-overlap branch still uses np.int (removed from NumPy); restore it for this test only.
    monkeypatch.setattr(np, "int", int, raising=False)
    padding = torch.zeros(4, 97, dtype=torch.bool)
    padding[1, 70:] = True
    padding[3, 40:] = True
    config = SpanMaskConfig(0.65, 10, selection, 0.0, no_overlap, 1)
    for seed in range(4):
        np.random.seed(seed)
        theirs = wav2vec2_model.compute_mask_indices(
            (4, 97), padding, 0.65, 10, selection, 0.0, min_masks=2, no_overlap=no_overlap, min_space=1)
        ours = compute_mask_indices(padding, config, generator=np.random.RandomState(seed))
        assert np.array_equal(ours.numpy(), theirs)


# ------------------------------------------------------------------ other layouts / sources
def tiny_wavlm(tmp_path: Path):
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = WavLMConfig({
        "encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4,
        "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 2 + [(32, 2, 2)] * 2", "conv_pos": 16,
        "conv_pos_groups": 4, "relative_position_embedding": True, "num_buckets": 32, "max_distance": 64,
        "gru_rel_pos": True,
    })
    torch.manual_seed(0)
    model = WavLM(cfg).eval()
    path = tmp_path / "WavLM-tiny.pt"
    torch.save({"cfg": dict(cfg.__dict__), "model": model.state_dict()}, path)  # the WavLM-Base+.pt layout
    return model, path


def test_wavlm_checkpoint_loads_and_runs(tmp_path: Path) -> None:
    from s3prl.upstream.wavlm.WavLM import WavLM

    original, path = tiny_wavlm(tmp_path)
    teacher = load_teacher(path)
    assert type(teacher.model) is WavLM and teacher.kind == "wavlm" and teacher.num_layers == 2
    torch.manual_seed(1)
    src = torch.randn(2, 4000) * 0.1
    lengths = torch.tensor([4000, 2900])
    src[1, 2900:] = 0
    out = teacher(src, lengths)
    wave_padding = torch.arange(4000)[None] >= lengths[:, None]
    with torch.no_grad():
        (last, layers), own_mask = original.extract_features(src, wave_padding, output_layer=2, ret_layer_results=True)
    assert torch.equal(out.padding_mask, own_mask)
    for ours, (theirs, _) in zip(out.layer_results, layers[1:]):
        assert (ours - theirs.transpose(0, 1)).abs().max().item() <= ATOL
    mask = teacher.compute_mask_indices(out.padding_mask, generator=0)
    masked, unmasked = teacher.forward_masked_and_unmasked(src, lengths, mask)
    assert (unmasked.layer_results[-1] - out.layer_results[-1]).abs().max().item() <= ATOL


def test_wav2vec2_fairseq_layout_loads_and_runs(tmp_path: Path) -> None:
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=4,
                         conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 2 + [(32, 2, 2)] * 2", conv_pos=16,
                         conv_pos_groups=4, final_dim=32, latent_vars=8, latent_groups=2)
    torch.manual_seed(0)
    original = Wav2Vec2Model(cfg).eval()
    path = tmp_path / "wav2vec_tiny.pt"
    torch.save({"cfg": {"model": {"_name": "wav2vec2", **dataclasses.asdict(cfg)}, "task": {"normalize": False}},
                "model": original.state_dict()}, path)
    teacher = load_teacher(path)
    assert type(teacher.model) is Wav2Vec2Model and teacher.kind == "wav2vec2"
    src, lengths = torch.randn(2, 4000) * 0.1, torch.tensor([4000, 3100])
    src[1, 3100:] = 0
    out = teacher(src, lengths)
    with torch.no_grad():
        own = original.extract_features(src, torch.arange(4000)[None] >= lengths[:, None])
    assert torch.equal(out.padding_mask, own["padding_mask"])
    assert (out.last_hidden_state - own["x"]).abs().max().item() <= ATOL


def test_s3prl_converted_format_and_hub_entry(tmp_path: Path, reference: dict) -> None:
    from s3prl.upstream.hubert import hubconf
    from s3prl.upstream.hubert.convert import load_converted_model

    converted = convert_to_s3prl(TINY, tmp_path / "tiny_hubert.converted.pt")
    assert read_teacher_checkpoint(converted).layout == "s3prl_converted"
    load_converted_model(converted)  # S3PRL's own loader accepts what we wrote
    src, lengths = batch_and_lengths(reference)
    assert_outputs_match(load_teacher(converted)(src, lengths), reference["batch"], "converted")

    # A hub namespace of our own: S3PRL's hubert_local builds the expert, nothing global changes.
    hub = types.SimpleNamespace(tiny_hubert=lambda **kw: hubconf.hubert_local(ckpt=str(converted), **kw))
    for name in ("tiny_hubert", "s3prl:tiny_hubert"):
        from_hub = load_teacher(name, hub=hub)
        assert from_hub.kind == "hubert" and from_hub.source == "s3prl:tiny_hubert"
        assert_outputs_match(from_hub(src, lengths), reference["batch"], f"hub {name}")
    with pytest.raises(ValueError, match="close matches.*tiny_hubert"):
        load_teacher("tiny_huber", hub=hub)


def tiny_hf_hubert():
    transformers = pytest.importorskip("transformers")
    config = transformers.HubertConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
        conv_dim=(32, 32, 32), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    return transformers.HubertModel(config).eval()


@pytest.mark.parametrize("safe_serialization", [True, False])
def test_hugging_face_directory_matches_transformers(tmp_path: Path, safe_serialization: bool) -> None:
    hf_model = tiny_hf_hubert()
    hf_model.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    teacher = load_teacher(tmp_path)
    from s3prl.upstream.hubert.hubert_model import HubertModel

    assert type(teacher.model) is HubertModel and teacher.num_layers == 3
    src = torch.randn(2, 3200) * 0.1
    with torch.no_grad():
        hidden = hf_model(src, output_hidden_states=True).hidden_states
    out = teacher(src)
    for index, layer in enumerate(out.layer_results):
        assert (layer - hidden[index + 1]).abs().max().item() <= ATOL
    assert torch.equal(teacher.model.mask_emb, hf_model.masked_spec_embed)


def test_hugging_face_unknown_key_raises(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    hf_model = tiny_hf_hubert()
    hf_model.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    state["encoder.layers.0.attention.rotary.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(TeacherCheckpointError, match="rotary"):
        load_teacher(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "wav2vec2"}))
    with pytest.raises(TeacherCheckpointError, match="model_type='wav2vec2'"):
        load_teacher(tmp_path)


# ------------------------------------------------------------------ bad input
def test_unknown_teacher_kind_is_a_clear_error(tmp_path: Path) -> None:
    weights = {"decoder.embed_tokens.weight": torch.zeros(4, 4)}
    named = tmp_path / "lm.pt"
    torch.save({"cfg": {"model": {"_name": "transformer_lm"}, "task": {}}, "model": weights}, named)
    with pytest.raises(TeacherCheckpointError, match=r"lm\.pt.*unknown teacher kind.*transformer_lm"):
        load_teacher(named)
    anonymous = tmp_path / "mystery.pt"
    torch.save({"cfg": {"model": {"encoder_layers": 2}}, "model": weights}, anonymous)
    with pytest.raises(TeacherCheckpointError, match=r"mystery\.pt.*unknown teacher kind"):
        load_teacher(anonymous)
    layout = tmp_path / "weights_only.pt"
    torch.save({"state_dict": weights}, layout)
    with pytest.raises(TeacherCheckpointError, match=r"weights_only\.pt.*top-level keys \['state_dict'\]"):
        load_teacher(layout)
    with pytest.raises(ValueError, match="no such file"):
        load_teacher(tmp_path / "missing.pt")


def test_checkpoint_code_never_runs(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"cfg": {"model": {"_name": "hubert"}}, "model": {"x": torch.zeros(1)}, "extra": Exploit()}, path,
               pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match="refused"):
        load_teacher(path)
    # A cfg string S3PRL would eval is parsed as a literal first, so it cannot run either.
    spec = read_teacher_checkpoint(TINY)
    bad = tmp_path / "bad_conv.pt"
    torch.save({"cfg": {"model": {**spec.model_cfg, "conv_feature_layers": "__import__('os').getcwd()"},
                        "task": spec.task_cfg}, "model": spec.state_dict}, bad)
    with pytest.raises(TeacherCheckpointError, match="conv_feature_layers"):
        load_teacher(bad)
    assert not (tmp_path / "pwned").exists()


def test_layer_mapping() -> None:
    assert resolve_layer_mapping(12, 12) == list(range(12))
    assert resolve_layer_mapping(4, 12) == [2, 5, 8, 11]
    assert resolve_layer_mapping(2, 4, [1, 3]) == [1, 3]
    with pytest.raises(ValueError, match="student layer 1 -> teacher layer 12 is impossible.*12 layers"):
        resolve_layer_mapping(2, 12, [3, 12])
    with pytest.raises(ValueError, match="teacher layer -1"):
        resolve_layer_mapping(2, 12, [-1, 11])
    with pytest.raises(ValueError, match="3 entries but the student has 2"):
        resolve_layer_mapping(2, 12, [1, 2, 3])
    with pytest.raises(ValueError, match="positive integer"):
        resolve_layer_mapping(0, 12)
    with pytest.raises(ValueError, match="integer teacher layer index"):
        resolve_layer_mapping(2, 12, [1.0, 11])
    assert resolve_layer_mapping(2, 12, np.array([5, 11])) == [5, 11]


def test_teacher_output_carries_the_first_layer_input() -> None:
    """Issue 11: the STaR objective hooked teacher.model.encoder.layers[0]; the teacher now
    reports that input itself (the same tensor the hook saw)."""
    teacher = load_teacher(TINY)
    waves = torch.randn(2, 8000) * 0.1
    lengths = torch.tensor([8000, 6000])
    seen = []
    handle = teacher.model.encoder.layers[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        output = teacher(waves, lengths)
    finally:
        handle.remove()
    frames = output.layer_results[0].shape[1]
    assert output.encoder_input.shape == output.layer_results[0].shape
    assert torch.equal(output.encoder_input, seen[0].transpose(0, 1)[:, :frames])
    masked, unmasked = teacher.forward_masked_and_unmasked(waves, lengths, torch.zeros(2, frames, dtype=torch.bool))
    assert torch.allclose(unmasked.encoder_input, output.encoder_input, atol=1e-6)
    assert torch.allclose(masked.encoder_input, output.encoder_input, atol=1e-6)  # nothing masked
