"""The training objectives in-process: what each one feeds its loss, against recorded or explicit values.

The loss functions alone are pinned in ``test_losses.py``; these tests pin the glue in
``recycle_distill/training/objectives.py``: which teacher run goes where, which frames count,
which layers are hints, how heavy each term is, and what STaR's intra-layer term receives.
The masking step is the original trainer's recorded one (``tests/data/loss``), whose teacher
is the tiny fairseq checkpoint in ``tests/data/teacher`` (same sha256 as the fixtures' meta).
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np
import pytest
import torch

import recycle_distill
from recycle_distill.training.data.collate import AudioBatch
from recycle_distill.training.teacher import load_teacher
from recycle_distill.training import load_train_config
from recycle_distill.training.objectives import build_objective, sample_hint_layers
from recycle_distill.training.teacher.upstream_teacher import teacher_layer_mapping

from helpers.train_helpers import TEACHER, tiny_distiller

LOSS_DATA = pathlib.Path(__file__).parents[1] / "data" / "loss"
MASKING_FIXTURES = ["loss_tiny_armhubert", "loss_tiny_armhubert_proj", "loss_tiny_maskhubert", "loss_tiny_maskhubert_proj"]
TERMS = ("mask_hint_loss", "unmask_hint_loss", "mask_rec_loss", "unmask_rec_loss", "hint_loss", "rec_loss")


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict:
    return torch.load(LOSS_DATA / f"{name}.pt", weights_only=True)


@functools.lru_cache(maxsize=None)
def teacher():
    return load_teacher(str(TEACHER))


def train_config(family: str, distiller: dict, **train):
    """A TrainConfig with every train.* key at its default unless given (the data path is never read).

    ``distil_random_layer`` defaults to 3: the tiny students have 4 layers.
    """
    return load_train_config({
        "family": family, "teacher": {"teacher_model": str(TEACHER)}, "data": {"libri_root": "/nonexistent"},
        "train": {"distil_random_layer": 3, **train}, "distiller": dict(distiller),
    })


def padded_batch(seed: int, short: int) -> AudioBatch:
    """A 1 s utterance and one of ``short`` samples (zeros beyond), noise drawn after ``manual_seed(seed)``."""
    torch.manual_seed(seed)
    batch = AudioBatch(torch.randn(2, 16000) * 0.1, torch.tensor([16000, short]), torch.arange(2))
    batch.waveforms[1, short:] = 0
    return batch


def fixture_family(fixture: dict) -> str:
    return "armhubert" if fixture["config"].get("reuse_pattern") not in (None, "", "None") else "maskhubert"


def fixture_student(fixture: dict):
    family = fixture_family(fixture)
    overrides = {"reference_batched_reuse": True} if family == "armhubert" else {}
    student = recycle_distill.build_student(dict(fixture["config"]), family=family, **overrides)
    student.load_state_dict(fixture["state_dict"], strict=True)
    return student.train()  # every dropout of the fixtures is 0, as recorded


def fixture_batch(fixture: dict) -> AudioBatch:
    lengths = (~fixture["padding_mask"]).sum(dim=1)
    return AudioBatch(fixture["x"], lengths, torch.arange(len(lengths)))


def masking_objective(fixture: dict, student, **train):
    """The objective of the recorded step, with the recorded mask and hint layers injected."""
    config = train_config(fixture_family(fixture), fixture["config"], **train)
    objective = build_objective(config, teacher_layer_mapping(teacher(), student, config))
    objective.set_epoch(0)
    objective.hint_layers = list(fixture["rand_l"])
    objective.mask_indices = lambda teacher, batch: fixture["mask_indices"]
    return objective


# ------------------------------------------------------------------ masking objective
def test_masking_defaults_are_the_recorded_weights():
    """The recorded step used the defaults (0.1 hints, 1.0 last): a changed default changes every run."""
    config = train_config("maskhubert", load("loss_tiny_maskhubert")["config"])
    for name in MASKING_FIXTURES:
        recorded = load(name)["train_cfg"]
        assert (config.train.random_layer_weight, config.train.rec_loss_weight) == (
            recorded["random_layer_weight"], recorded["rec_loss_weight"]) == (0.1, 1.0)
    assert config.train.exclude_padding is False


@pytest.mark.parametrize("name", MASKING_FIXTURES)
def test_masking_training_loss_equals_the_recorded_step(name):
    """Tiny fairseq teacher + recorded inputs + recorded mask: every term of the original step (rtol 1e-5)."""
    fixture = load(name)
    student = fixture_student(fixture)
    result = masking_objective(fixture, student).training_loss(student, teacher(), fixture_batch(fixture))
    assert set(result.terms) == set(TERMS)
    for key in TERMS:
        torch.testing.assert_close(result.terms[key], fixture["losses"][key], rtol=1e-5, atol=0, msg=key)
    torch.testing.assert_close(result.total, fixture["total_loss"], rtol=1e-5, atol=0)


def _masking_loss_by_hand(projections, unmasked, masked, mask, padding, hints, hint_weight, last_weight):
    """The masking loss written out frame by frame over the valid frames (docs/losses.md)."""
    batch, frames = projections[0].shape[:2]
    sums = {"mask_hint_loss": 0.0, "unmask_hint_loss": 0.0, "mask_rec_loss": 0.0, "unmask_rec_loss": 0.0}
    count = 0
    for b in range(batch):
        for t in range(frames):
            if padding[b, t]:
                continue
            count += 1
            masked_frame = bool(mask[b, t])
            for layer in [*hints, len(projections) - 1]:
                target = (unmasked if masked_frame else masked)[layer][t, b].double()
                error = float((projections[layer][b, t].double() - target).square().mean())
                kind = "rec" if layer == len(projections) - 1 else "hint"
                sums[f"{'mask' if masked_frame else 'unmask'}_{kind}_loss"] += error
    terms = {key: value / count for key, value in sums.items()}
    terms["hint_loss"] = hint_weight * (terms["mask_hint_loss"] + terms["unmask_hint_loss"])
    terms["rec_loss"] = last_weight * (terms["mask_rec_loss"] + terms["unmask_rec_loss"])
    return terms


@pytest.mark.parametrize("name", ["loss_tiny_armhubert", "loss_tiny_maskhubert"])
def test_masking_training_loss_excluding_padding(name):
    """train.exclude_padding: the valid frames only, as an explicit per-frame computation on the recorded teacher."""
    fixture = load(name)
    student = fixture_student(fixture)
    batch = fixture_batch(fixture)
    result = masking_objective(fixture, student, exclude_padding=True).training_loss(student, teacher(), batch)
    out = student(batch.waveforms, batch.lengths, mask_indices=fixture["mask_indices"])
    frames = out.projections[0].shape[1]
    # The student's frame rule, written out: floor((L - k) / s) + 1 for each conv layer.
    valid = batch.lengths.clone()
    for kernel, stride in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
        valid = torch.div(valid - kernel, stride, rounding_mode="floor") + 1
    padding = torch.arange(frames)[None, :] >= valid[:, None]
    assert padding[1].any() and not padding[0].any(), "the fixture's second utterance is padded"
    expected = _masking_loss_by_hand(
        [p.detach() for p in out.projections], fixture["teacher_unmasked"]["layer_results_x"],
        fixture["teacher_masked"]["layer_results_x"], fixture["mask_indices"], padding, fixture["rand_l"], 0.1, 1.0)
    for key in TERMS:
        assert float(result.terms[key]) == pytest.approx(expected[key], rel=1e-5), key
    assert float(result.total) == pytest.approx(expected["hint_loss"] + expected["rec_loss"], rel=1e-5)


# ------------------------------------------------------------------ hint layers
@pytest.mark.parametrize("family", ["armhubert", "maskhubert", "fithubert"])
def test_hint_layers_change_between_epochs_and_exclude_the_last(family):
    config = train_config(family, tiny_distiller(family, encoder_layers=12, **(
        {"pred_layer_id": str(list(range(12)))} if family == "fithubert" else
        {"reuse_pattern": "[True, False] * 6"} if family == "armhubert" else {})), distil_random_layer=3)
    objective = build_objective(config, list(range(12)))
    subsets = []
    for epoch in range(8):
        objective.set_epoch(epoch)
        assert len(objective.hint_layers) == 3 and 11 not in objective.hint_layers
        assert objective.hint_layers == sorted(set(objective.hint_layers))
        assert objective.hint_layers == sample_hint_layers(12, 3, config.train.seed, epoch)
        subsets.append(tuple(objective.hint_layers))
    assert len(set(subsets)) >= 4, subsets
    objective.set_epoch(3)
    assert tuple(objective.hint_layers) == subsets[3], "an epoch's subset is reproducible (resume)"


def test_hint_layers_depend_on_the_seed_and_cover_every_lower_layer():
    seen = set()
    for epoch in range(64):
        seen.update(sample_hint_layers(12, 3, 1337, epoch))
    assert seen == set(range(11))
    assert [sample_hint_layers(12, 3, seed, 0) for seed in (1, 2, 3, 4)] != [sample_hint_layers(12, 3, 1, 0)] * 4


# ------------------------------------------------------------------ FitHuBERT
def _fit_setup(**train):
    distiller = tiny_distiller("fithubert", encoder_embed_dim=64, pred_head_final_dim=96, dropout=0.0,
                               attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0, encoder_layerdrop=0.0)
    config = train_config("fithubert", distiller, **train)
    torch.manual_seed(0)
    student = recycle_distill.build_student(distiller, family="fithubert").eval()
    objective = build_objective(config, teacher_layer_mapping(teacher(), student, config))
    objective.set_epoch(0)
    batch = padded_batch(seed=1, short=12000)
    return config, student, objective, batch


def test_fithubert_weights_hints_0_1_and_the_last_head_1_0():
    config, student, objective, batch = _fit_setup()
    result = objective.training_loss(student, teacher(), batch)
    with torch.no_grad():
        heads = student(batch.waveforms, batch.lengths).projections
        target = teacher()(batch.waveforms, batch.lengths).layer_results
    assert len(heads) == 4 == len(target)
    errors = [float((head - target[layer][:, : head.shape[1]]).square().mean()) for layer, head in zip([0, 1, 2, 3], heads)]
    expected = 0.1 * sum(errors[:3]) + 1.0 * errors[3]
    assert float(result.total) == pytest.approx(expected, rel=1e-5)
    assert float(objective.validation_loss(student, teacher(), batch).total) == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ STaR
def _star_setup(per_utterance_cnn: bool = False):
    distiller = tiny_distiller("starhubert", encoder_embed_dim=64, dropout=0.0, attention_dropout=0.0,
                               activation_dropout=0.0, dropout_input=0.0, per_utterance_cnn=per_utterance_cnn)
    config = train_config("starhubert", distiller)
    torch.manual_seed(0)
    student = recycle_distill.build_student(distiller, family="starhubert").eval()
    objective = build_objective(config, teacher_layer_mapping(teacher(), student, config))
    objective.set_epoch(0)
    return student, objective


def _layer_inputs(module_layers, transpose: bool):
    """Pre-forward hooks keeping every layer's input, batch-first."""
    inputs: list = []

    def keep(module, args):
        inputs.append(args[0].transpose(0, 1) if transpose else args[0])

    return inputs, [layer.register_forward_pre_hook(keep) for layer in module_layers]


def test_star_objective_feeds_each_layers_own_input_and_the_padding(monkeypatch):
    """Intra-layer pairs: layer m's input (output of m-1) with its output, for both models; padding passed."""
    student, objective = _star_setup()
    batch = padded_batch(seed=2, short=11000)
    captured = {}

    def recording_loss(student_layers, teacher_layers, **kwargs):
        captured.update(kwargs, student_layers=student_layers, teacher_layers=teacher_layers)
        return student_layers[0].sum() * 0, {}

    monkeypatch.setattr("recycle_distill.training.objectives.star_loss", recording_loss)
    t_inputs, t_hooks = _layer_inputs(teacher().model.encoder.layers, transpose=True)
    s_inputs, s_hooks = _layer_inputs(student.encoder.layers, transpose=False)
    try:
        objective.training_loss(student, teacher(), batch)
    finally:
        for hook in t_hooks + s_hooks:
            hook.remove()
    # With autograd on, as in training (the no-grad path sums in another order).
    expected_student = student(batch.waveforms, batch.lengths)
    expected_teacher = teacher()(batch.waveforms, batch.lengths)
    assert len(t_inputs) == 4 and len(s_inputs) == 4
    frames = expected_student.layer_results[0].shape[1]
    for m in range(4):
        torch.testing.assert_close(captured["student_layers"][m], expected_student.layer_results[m], rtol=0, atol=1e-6)
        torch.testing.assert_close(captured["teacher_layers"][m], expected_teacher.layer_results[m], rtol=0, atol=1e-6)
        torch.testing.assert_close(captured["student_inputs"][m], s_inputs[m], rtol=0, atol=1e-6)
        torch.testing.assert_close(captured["teacher_inputs"][m][:, :frames], t_inputs[m][:, :frames], rtol=0, atol=1e-6)
    for m in range(1, 4):  # layer m's input is layer m-1's output (not layer m's)
        torch.testing.assert_close(captured["teacher_inputs"][m], expected_teacher.layer_results[m - 1], rtol=0, atol=1e-6)
    valid = torch.tensor([frames, int(student.frame_lengths(torch.tensor([11000]))[0])])
    assert valid[1] < frames
    assert torch.equal(captured["padding_mask"], torch.arange(frames)[None, :] >= valid[:, None])
    assert captured["normalization"] == "dim"


def test_star_loss_of_a_padded_batch_is_the_mean_of_its_utterances():
    """Padding honoured: batch loss = mean of each utterance's loss on its valid frames alone (reduction mean)."""
    from recycle_distill.training.losses import star_loss

    student, objective = _star_setup()
    batch = padded_batch(seed=3, short=11000)
    with torch.no_grad():
        total = objective.training_loss(student, teacher(), batch).total
        out = student(batch.waveforms, batch.lengths)
        target = teacher()(batch.waveforms, batch.lengths)
    t_inputs, hooks = _layer_inputs(teacher().model.encoder.layers, transpose=True)
    with torch.no_grad():
        teacher()(batch.waveforms, batch.lengths)
    for hook in hooks:
        hook.remove()
    valid = (~out.padding_mask).sum(dim=1).tolist()
    per_utterance = []
    for b, frames in enumerate(valid):
        def crop(tensors):
            return [t[b : b + 1, :frames] for t in tensors]

        loss, _ = star_loss(crop(out.layer_results), crop(target.layer_results),
                            student_inputs=crop([out.encoder_input, *out.layer_results[:-1]]),
                            teacher_inputs=crop(t_inputs))
        per_utterance.append(float(loss))
    assert float(total) == pytest.approx(sum(per_utterance) / 2, rel=1e-5)


def test_star_noise_in_the_padded_samples_leaves_the_loss_unchanged(monkeypatch):
    """With a padding-invariant student (per-utterance CNN) and teacher input, what lies past each length is ignored."""
    student, objective = _star_setup(per_utterance_cnn=True)
    forward = teacher().forward

    def zero_padded_samples(waveforms, lengths=None, *args, **kwargs):
        keep = torch.arange(waveforms.shape[1])[None, :] < lengths[:, None]
        return forward(waveforms * keep, lengths, *args, **kwargs)

    monkeypatch.setattr(teacher(), "forward", zero_padded_samples)
    torch.manual_seed(4)
    lengths = torch.tensor([16000, 10400])
    clean = torch.randn(2, 16000) * 0.1
    clean[1, 10400:] = 0
    noisy = clean.clone()
    noisy[1, 10400:] = torch.randn(5600)
    with torch.no_grad():
        a = objective.training_loss(student, teacher(), AudioBatch(clean, lengths, torch.arange(2))).total
        b = objective.training_loss(student, teacher(), AudioBatch(noisy, lengths, torch.arange(2))).total
    assert float(a) > 0
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


# ------------------------------------------------------------------ the masking objective's masks
def test_masks_use_the_configured_span_rule_and_one_stream_per_utterance(monkeypatch):
    """What reaches the teacher's span masking: config.teacher's rule, each row alone, its own seed."""
    from recycle_distill.training.objectives import utterance_seed

    config = load_train_config({
        "family": "maskhubert", "data": {"libri_root": "/nonexistent"}, "train": {"distil_random_layer": 3, "seed": 5},
        "teacher": {"teacher_model": str(TEACHER), "mask_prob": 0.65, "mask_length": 7, "mask_selection": "normal",
                    "mask_other": 2.0, "no_mask_overlap": False, "mask_min_space": 3},
        "distiller": dict(load("loss_tiny_maskhubert")["config"]),
    })
    objective = build_objective(config, [0, 1, 2, 3])
    objective.set_epoch(2)
    calls = []

    def record(padding, config=None, generator=None):
        calls.append((padding.clone(), config, generator.get_state()[1].copy()))
        return torch.full(padding.shape, len(calls) == 2)

    monkeypatch.setattr(teacher(), "compute_mask_indices", record)
    batch = AudioBatch(torch.zeros(2, 16000), torch.tensor([16000, 9000]), torch.tensor([41, 3]))
    mask = objective.mask_indices(teacher(), batch)
    assert mask.shape == (2, 49) and mask.dtype == torch.bool
    assert mask[1].all() and not mask[0].any(), "row i of the mask is utterance i's draw"
    frames = teacher().frame_padding_mask(batch.lengths, 16000)
    for row, (padding, span, state) in enumerate(calls):
        assert torch.equal(padding, frames[row : row + 1])
        assert (span.mask_prob, span.mask_length, span.selection, span.other, span.no_overlap, span.min_space) == (
            0.65, 7, "normal", 2.0, False, 3)
        expected = np.random.RandomState(utterance_seed(5, 2, int(batch.indices[row]))).get_state()[1]
        assert np.array_equal(state, expected)


def test_a_masks_draw_depends_on_the_utterance_not_on_its_batch():
    fixture = load("loss_tiny_maskhubert")
    config = train_config("maskhubert", fixture["config"])
    objective = build_objective(config, [0, 1, 2, 3])
    objective.set_epoch(0)
    waves = torch.randn(3, 16000) * 0.1
    together = objective.mask_indices(teacher(), AudioBatch(waves, torch.full((3,), 16000), torch.tensor([7, 8, 9])))
    alone = objective.mask_indices(teacher(), AudioBatch(waves[2:], torch.tensor([16000]), torch.tensor([9])))
    assert torch.equal(together[2:], alone)
    assert not torch.equal(together[0], together[1])
    objective.set_epoch(1)
    assert not torch.equal(objective.mask_indices(teacher(), AudioBatch(waves[2:], torch.tensor([16000]), torch.tensor([9]))), alone)
    fraction = float(together.float().mean())
    assert 0.5 <= fraction <= 0.95, fraction  # mask_prob 0.8 of the frames as span starts, spans overlap


@pytest.mark.parametrize("name", MASKING_FIXTURES)
def test_masking_validation_loss_equals_the_recorded_one(name):
    """Both models unmasked, the student in eval mode: the original's recorded validation loss."""
    fixture = load(name)
    student = fixture_student(fixture).eval()
    objective = masking_objective(fixture, student)
    with torch.no_grad():
        result = objective.validation_loss(student, teacher(), fixture_batch(fixture))
    torch.testing.assert_close(result.total, fixture["val"]["v_loss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(result.terms["hint_loss"] + result.terms["rec_loss"], result.total)
    padded = masking_objective(fixture, student, exclude_padding=True)
    with torch.no_grad():
        excluded = padded.validation_loss(student, teacher(), fixture_batch(fixture)).total
    assert float(excluded) != pytest.approx(float(result.total), rel=1e-4), "exclude_padding reaches validation"


def test_star_validation_loss_is_the_training_loss():
    student, objective = _star_setup()
    batch = padded_batch(seed=5, short=12000)
    with torch.no_grad():
        train = objective.training_loss(student, teacher(), batch)
        valid = objective.validation_loss(student, teacher(), batch)
    assert float(train.total) > 0
    torch.testing.assert_close(valid.total, train.total, rtol=0, atol=0)
    assert set(valid.terms) == {"layerwise_loss", "intra_layer_loss"}
    torch.testing.assert_close(valid.terms["layerwise_loss"] + valid.terms["intra_layer_loss"], valid.total)


# ------------------------------------------------------------------ configured weights reach every loss
def test_configured_weights_reach_the_masking_losses():
    fixture = load("loss_tiny_maskhubert")
    student = fixture_student(fixture)
    objective = masking_objective(fixture, student, random_layer_weight=0.3, rec_loss_weight=2.0)
    result = objective.training_loss(student, teacher(), fixture_batch(fixture))
    terms = result.terms
    torch.testing.assert_close(terms["hint_loss"], 0.3 * (terms["mask_hint_loss"] + terms["unmask_hint_loss"]))
    torch.testing.assert_close(terms["rec_loss"], 2.0 * (terms["mask_rec_loss"] + terms["unmask_rec_loss"]))
    with torch.no_grad():
        valid = objective.validation_loss(student.eval(), teacher(), fixture_batch(fixture))
        plain = masking_objective(fixture, student).validation_loss(student, teacher(), fixture_batch(fixture))
    torch.testing.assert_close(valid.terms["hint_loss"], 3.0 * plain.terms["hint_loss"])
    torch.testing.assert_close(valid.terms["rec_loss"], 2.0 * plain.terms["rec_loss"])


def test_configured_weights_and_padding_reach_the_fithubert_loss():
    _, student, objective, batch = _fit_setup(random_layer_weight=0.3, rec_loss_weight=2.0)
    result = objective.training_loss(student, teacher(), batch)
    assert set(result.terms) == {f"layer_{k}_loss" for k in range(4)}
    expected = 0.3 * sum(result.terms[f"layer_{k}_loss"] for k in range(3)) + 2.0 * result.terms["layer_3_loss"]
    torch.testing.assert_close(result.total, expected)
    _, student, padded, batch = _fit_setup(exclude_padding=True)
    _, _, reference, _ = _fit_setup()
    assert float(padded.training_loss(student, teacher(), batch).total) != pytest.approx(
        float(reference.training_loss(student, teacher(), batch).total), rel=1e-4)


def test_student_frames_follow_crop_and_a_ddp_wrapper():
    from recycle_distill.training.objectives import _student_frames

    model = recycle_distill.build_student(tiny_distiller("maskhubert", crop_seq_to_multiple=2), family="maskhubert")
    batch = AudioBatch(torch.zeros(1, 16000), torch.tensor([16000]), torch.tensor([0]))
    assert _student_frames(model, batch) == 48  # 49 CNN frames cropped to a multiple of 2

    class Wrapped(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert _student_frames(Wrapped(model), batch) == 48


def test_objectives_start_without_hint_layers_and_seeds_are_stable():
    """Hint layers exist only once an epoch is set; the per-utterance mask seed is SHA-256 based (resume-stable)."""
    import hashlib

    from recycle_distill.training.objectives import utterance_seed

    objective = build_objective(train_config("maskhubert", load("loss_tiny_maskhubert")["config"]), [0, 1, 2, 3])
    assert objective.hint_layers == []
    digest = hashlib.sha256(b"1337/4/12").digest()
    assert utterance_seed(1337, 4, 12) == digest[0] + 256 * digest[1] + 65536 * digest[2] + 16777216 * digest[3]


# ------------------------------------------------------------------ wiring (mutation testing)
def test_build_objective_knows_layer_hints():
    from recycle_distill.training.objectives import LayerHintsObjective

    config = train_config("maskhubert", tiny_distiller("maskhubert"), objective="layer_hints")
    assert isinstance(build_objective(config, [0, 1, 2, 3]), LayerHintsObjective)


def test_upstream_teacher_first_input_is_its_state_0():
    from types import SimpleNamespace

    from recycle_distill.training.objectives import _teacher_with_encoder_input

    states = [torch.full((1, 2, 3), float(i)) for i in range(3)]

    class UpstreamLike:
        kind = "upstream"

        def __call__(self, waveforms, lengths):
            return SimpleNamespace(layer_results=states)  # no encoder_input: S3PRL upstreams have none

    batch = SimpleNamespace(waveforms=torch.zeros(1, 400), lengths=torch.tensor([400]))
    _, first_input = _teacher_with_encoder_input(UpstreamLike(), batch)
    assert first_input is states[0]

    class ModelLike:
        def __call__(self, waveforms, lengths):
            return SimpleNamespace(layer_results=states, encoder_input=torch.ones(1))

    _, first_input = _teacher_with_encoder_input(ModelLike(), batch)
    assert torch.equal(first_input, torch.ones(1))
