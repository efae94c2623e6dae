"""Our students reproduce the original code's outputs (docs/students.md §1 fixtures), padded frames included."""

import pytest
import torch

from recycle_distill import build_student
from recycle_distill.students.blocks.attention import reference_pairing
from recycle_distill.students.blocks.masks import pad_waveforms

from conftest import FIXTURES, fixture_family, load_fixture

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


# Every comparison below takes ``fast_paths``: it runs on the plain blocks, on the inference
# blocks (optimize_for_inference), and on those with their thresholds shrunk
# (conftest.FAST_PATH_THRESHOLDS), so ~1 s fixtures take the row-blocked attention and the
# per-utterance branches too. The hidden-state comparisons take ``any_blocks``: those three and
# the map-free reuse blocks (conftest.any_blocks), which hand on queries and keys, not maps.

GOLDEN = sorted(p.name for p in FIXTURES.glob("*golden_tiny_*.pt") if "masked" not in p.name)
MASKED = sorted(p.name for p in FIXTURES.glob("*_masked.pt"))


def _model(fixture: dict, family: str, **overrides):
    model = build_student(fixture["config"], family=family, **overrides)
    model.load_state_dict(fixture["state_dict"])
    return model


def _assert_close(ours, reference, what):
    assert ours.shape == reference.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(reference.shape)}"
    diff = (ours - reference).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs diff {diff:.3g}"


def _check_against(output, reference: dict, what: str, family: str):
    for index, (ours, ref) in enumerate(zip(output.hidden_states, reference["hidden_states"], strict=True)):
        _assert_close(ours, ref, f"{what} hidden_states[{index}]")
    last = reference["last_hidden_state"]
    if family == "starhubert":  # the reference STaR expert returns it time-major; ours is batch-first
        last = last.transpose(0, 1)
    _assert_close(output.last_hidden_state, last, f"{what} last_hidden_state")
    model_ref = reference["model"]
    for index, (ours, ref) in enumerate(zip(output.layer_results, model_ref["layer_results"], strict=True)):
        _assert_close(ours, ref.transpose(0, 1), f"{what} layer_results[{index}]")
    if model_ref.get("projections") is not None:
        for index, (ours, ref) in enumerate(zip(output.projections, model_ref["projections"], strict=True)):
            _assert_close(ours, ref, f"{what} projections[{index}]")
    if model_ref.get("padding_mask") is None:
        assert output.padding_mask is None or not output.padding_mask.any()
    else:
        assert torch.equal(output.padding_mask, model_ref["padding_mask"])


@pytest.mark.parametrize("name", GOLDEN)
@pytest.mark.parametrize("reference_batched_reuse", [False, True])
def test_single_utterances_match_in_both_modes(name, reference_batched_reuse, any_blocks):
    fixture = load_fixture(name)
    model = any_blocks(_model(fixture, fixture_family(name), reference_batched_reuse=reference_batched_reuse))
    for index, wave in enumerate(fixture["wavs"]):
        output = model(wave.unsqueeze(0), torch.tensor([wave.numel()]))
        _check_against(output, fixture["outputs"]["single"][index], f"{name} single[{index}]", fixture_family(name))


@pytest.mark.parametrize("name", GOLDEN)
def test_batched_outputs_match(name, any_blocks):
    """mask/star in default mode; ARMHuBERT in reference-pairing mode (docs/students.md §9)."""
    fixture = load_fixture(name)
    family = fixture_family(name)
    model = any_blocks(_model(fixture, family, reference_batched_reuse=family == "armhubert"))
    batch, lengths = pad_waveforms(fixture["wavs"])
    _check_against(model(batch, lengths), fixture["outputs"], f"{name} batch", family)


@pytest.mark.parametrize("name", MASKED)
def test_masked_forward_matches(name, any_blocks):
    fixture = load_fixture(name)
    family = fixture_family(name)
    model = any_blocks(_model(fixture, family, reference_batched_reuse=family == "armhubert"))
    batch, lengths = pad_waveforms(fixture["wavs"])
    reference = fixture["outputs_masked"]
    output = model(batch, lengths, mask_indices=reference["mask_indices"])
    for index, (ours, ref) in enumerate(zip(output.layer_results, reference["model"]["layer_results"], strict=True)):
        _assert_close(ours, ref.transpose(0, 1), f"masked layer_results[{index}]")
    for index, (ours, ref) in enumerate(zip(output.projections, reference["model"]["projections"], strict=True)):
        _assert_close(ours, ref, f"masked projections[{index}]")
    # The mask really changes the output: the fixture is not the unmasked one.
    unmasked = model(batch, lengths)
    assert (unmasked.projections[-1] - output.projections[-1]).abs().max() > 1e-3


def test_full_layers_hand_on_the_reference_attention_maps(fast_paths):
    fixture = load_fixture("golden_tiny_armhubert.pt")
    model = fast_paths(_model(fixture, "armhubert", reference_batched_reuse=True))
    captured = {}
    for index in (0, 2):
        model.encoder.layers[index].self_attn.register_forward_hook(
            lambda module, args, output, index=index: captured.__setitem__(str(index), output[1])
        )
    batch, lengths = pad_waveforms(fixture["wavs"])
    model(batch, lengths)
    for key, reference in fixture["outputs"]["debug_full_layer_attention_probs"].items():
        _assert_close(captured[key].transpose(0, 1), reference, f"attention map of layer {key}")


def test_reference_pairing_is_the_documented_permutation():
    batch, heads = 3, 4
    probs = torch.arange(batch * heads).float().view(batch, heads, 1, 1).expand(batch, heads, 2, 2)
    paired = reference_pairing(probs)
    for b in range(batch):
        for h in range(heads):
            source = b * heads + h
            expected = (source % batch) * heads + source // batch
            assert paired[b, h, 0, 0].item() == expected
    assert torch.equal(reference_pairing(probs[:1]), probs[:1])


def test_default_pairing_keeps_utterances_independent(any_blocks):
    """The longest (unpadded) item of a batch equals its single run only with correct pairing."""
    fixture = load_fixture("golden_tiny_armhubert.pt")
    batch, lengths = pad_waveforms(fixture["wavs"])
    single = fixture["outputs"]["single"][0]["last_hidden_state"][0]
    ours = any_blocks(_model(fixture, "armhubert"))(batch, lengths).last_hidden_state[0]
    _assert_close(ours, single, "default-mode batch item 0")
    reference_mode = any_blocks(_model(fixture, "armhubert", reference_batched_reuse=True))(batch, lengths).last_hidden_state[0]
    assert (reference_mode - single).abs().max() > 2 * ATOL  # small: reused maps are near-uniform


@pytest.mark.parametrize("family", ["armhubert", "maskhubert", "starhubert"])
def test_per_utterance_cnn_makes_batched_equal_single(family, any_blocks):
    fixture = load_fixture(f"golden_tiny_{family}.pt")
    model = any_blocks(_model(fixture, family, per_utterance_cnn=True))
    batch, lengths = pad_waveforms(fixture["wavs"])
    output = model(batch, lengths)
    frames = int(model.frame_lengths(lengths)[1])
    single = fixture["outputs"]["single"][1]["hidden_states"][-1][0]
    _assert_close(output.last_hidden_state[1, :frames], single[:frames], "per-utterance CNN item 1")
    default = any_blocks(_model(fixture, family))(batch, lengths).last_hidden_state[1, :frames]
    assert (default - single[:frames]).abs().max() > 1e-4  # the GroupNorm-over-padding effect is real


@pytest.mark.parametrize("preset", ["fithubert", "starhubert", "armhubert"])
def test_presets_run_and_give_equal_shape_hidden_states(preset):
    torch.manual_seed(0)
    model = build_student(preset)
    waves = torch.randn(2, 16000) * 0.1
    output = model(waves, torch.tensor([16000, 12001]))
    assert len(output.hidden_states) == 12
    assert {tuple(h.shape) for h in output.hidden_states} == {tuple(output.hidden_states[0].shape)}
    assert output.hidden_states[0].shape[:2] == (2, 49)
