"""Any S3PRL upstream as a distillation teacher: routing, hidden-state indices, weighted sum,
frame-rate resampling, the layer_hints objective, and masking refused before training (issue 10)."""

from __future__ import annotations

import pathlib

import pytest
import torch

from recycle_distill.students.config import ConfigError
from recycle_distill.training.data.synth import make_tiny_librispeech
from recycle_distill.training.teacher import Teacher, load_teacher
from recycle_distill.training.teacher.frame_rate import FrameRateError, check_rates, resample_frames
from recycle_distill.training.teacher.upstream_teacher import UpstreamTeacher
from recycle_distill.training import load_train_config

from helpers import tiny_upstreams
from helpers.train_helpers import metrics, tiny_config

pytestmark = pytest.mark.s3prl

# Width of each tiny upstream's hidden_states (the heads of layer_hints predict it).
WIDTHS = {"tiny_data2vec": 48, "tiny_distilhubert": 40, "tiny_tera": 32}
# DistilHuBERT returns [feature, layer 1, layer 2, head 1, head 2, head 3]: distil its layers.
INDICES = {"tiny_data2vec": None, "tiny_distilhubert": [1, 1, 2, 2], "tiny_tera": None}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "LibriSpeech"
    make_tiny_librispeech(root, speakers=2, utterances_per_speaker=4, subsets=("train-clean-100", "dev-clean"))
    return root


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The three tiny upstreams, registered as s3prl.hub entries."""
    return tiny_upstreams.register_hub_entries(tmp_path, monkeypatch)


def _config(corpus, output, name, family, objective, steps=10, **teacher):
    config = tiny_config(corpus, output, family,
                         train={"max_steps": steps, "batch_size": 2, "objective": objective, "max_audio_seconds": 1.5},
                         distiller={"pred_head_final_dim": WIDTHS[name], "dropout": 0.0, "attention_dropout": 0.0,
                                    "activation_dropout": 0.0, "dropout_input": 0.0},
                         teacher={"teacher_model": f"s3prl:{name}", **teacher})
    config["optimizer"]["lr"] = 1.0e-3
    if INDICES[name] is not None:
        config["teacher"]["hidden_state_indices"] = INDICES[name]
    return load_train_config(config)


def _train(config):
    from recycle_distill.training.trainer import Trainer

    trainer = Trainer(config)
    trainer.fit()
    return trainer, [record["loss"] for record in metrics(pathlib.Path(config.output_dir))]


# ------------------------------------------------------------------ routing and indices
def test_other_model_classes_become_upstream_teachers_and_known_ones_do_not(hub):
    teachers = {name: load_teacher(f"s3prl:{name}") for name in WIDTHS}
    assert all(isinstance(t, UpstreamTeacher) and not isinstance(t, Teacher) for t in teachers.values())
    # data2vec: the 3 layer inputs + the encoder output; DistilHuBERT: feature, 2 layers, 3 heads.
    assert {n: t.num_states for n, t in teachers.items()} == {"tiny_data2vec": 4, "tiny_distilhubert": 6, "tiny_tera": 4}
    assert teachers["tiny_tera"].downsample_rate == 160 and teachers["tiny_data2vec"].downsample_rate == 320
    assert not any(t.training for t in teachers.values())
    assert not any(p.requires_grad for t in teachers.values() for p in t.parameters())


def test_hidden_states_land_on_the_student_grid_with_its_padding(hub):
    teacher = load_teacher("s3prl:tiny_tera")
    waves = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 9600])
    waves[1, 9600:] = 0
    out = teacher(waves, lengths)
    # The student's CNN gives 49 frames for 1 s and 29 for 0.6 s.
    assert [tuple(s.shape) for s in out.layer_results] == [(2, 49, 32)] * 4
    assert out.padding_mask.sum(1).tolist() == [0, 20]
    raw = teacher.expert([waves[0]])["hidden_states"][-1]  # (1, 101, 32) at 10 ms
    assert torch.allclose(out.layer_results[-1][0, 3], raw[0, 6:8].mean(0), atol=1e-6)


def test_indices_and_weighted_sum(hub):
    teacher = load_teacher("s3prl:tiny_data2vec")
    assert teacher.student_layer_mapping(4) == [1, 2, 2, 3]  # spread over indices 1..H-1
    with pytest.raises(ConfigError, match=r"teacher.hidden_state_indices: 4 is not an index of the 4 hidden_states"):
        teacher.configure([0, 1, 2, 4])
    teacher.configure([0, 1, 2, 3], "weighted_sum", [0.0, 1.0, 2.0, 3.0])
    assert teacher.student_layer_mapping(4) == [0, 1, 2, 4] and teacher.num_layers == 5
    out = teacher(torch.randn(1, 16000) * 0.1)
    weights = torch.softmax(torch.tensor([0.0, 1.0, 2.0, 3.0]), 0)
    expected = sum(w * s for w, s in zip(weights, out.layer_results[:4]))
    assert torch.allclose(out.layer_results[4], expected, atol=1e-6)


def test_resampling_rules():
    states = torch.arange(12.0).reshape(1, 6, 2)  # frames 0..5
    assert resample_frames(states, 160, 320, 3)[0, :, 0].tolist() == [1.0, 5.0, 9.0]  # pairs averaged
    assert resample_frames(states, 640, 320, 4)[0, :, 0].tolist() == [0.0, 0.0, 2.0, 2.0]  # repeated
    assert resample_frames(states, 320, 320, 8)[0, :, 0].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 10.0, 10.0]
    assert resample_frames(states, 480, 320, 9).shape == (1, 9, 2)  # 1.5x: linear interpolation
    with pytest.raises(FrameRateError, match=r"a 16x rate difference is more than 8x, so frame-by-frame targets are meaningless"):
        check_rates(20, 320, "s3prl:fast")
    with pytest.raises(FrameRateError, match="reports no usable frame rate"):
        check_rates(None, 320, "s3prl:odd")


# ------------------------------------------------------------------ training
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_star_and_layer_hints_distil_from_upstream_teachers(tmp_path, corpus, hub, name):
    for family, objective in (("starhubert", "star"), ("maskhubert", "layer_hints")):
        config = _config(corpus, tmp_path / f"{objective}", name, family, objective)
        trainer, losses = _train(config)
        assert isinstance(trainer.teacher, UpstreamTeacher)
        assert len(losses) == 10
        first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
        assert last < 0.9 * first, f"{name} {objective}: loss did not decrease: {losses}"


def test_masking_with_an_upstream_teacher_fails_before_training(tmp_path, corpus, hub):
    from recycle_distill.training.trainer import Trainer

    config = _config(corpus, tmp_path / "masking", "tiny_data2vec", "maskhubert", "masking")
    with pytest.raises(ConfigError) as caught:
        Trainer(config)
    assert str(caught.value) == (
        "train.objective: masking distillation cannot use the S3PRL upstream teacher s3prl:tiny_data2vec: masking "
        "distillation needs the teacher's own masked pass (its mask embedding put in place of the masked frames "
        "inside the model), which only the HuBERT / WavLM / wav2vec 2.0 model classes expose, not S3PRL's "
        "upstream interface; with this teacher use train.objective 'star' (STaRHuBERT), 'layer_hints' (any "
        "family with heads) or 'fithubert' (FitHuBERT)")
    assert not (tmp_path / "masking" / "metrics.jsonl").exists()


def test_upstream_keys_are_refused_for_model_class_teachers(tmp_path, corpus):
    from recycle_distill.training.trainer import Trainer

    config = tiny_config(corpus, tmp_path / "o", "maskhubert", teacher={"hidden_state_indices": [1, 2, 3, 4]})
    with pytest.raises(ConfigError, match=r"teacher.hidden_state_indices: applies to S3PRL upstream teachers"):
        Trainer(load_train_config(config))


def test_weighted_sum_weights_come_from_a_trained_s3prl_featurizer(tmp_path, corpus, hub):
    import argparse

    from recycle_distill.training.teacher.upstream_teacher import prepare_teacher

    downstream = tmp_path / "states-100.ckpt"  # the layout S3PRL's runner saves
    torch.save({"Args": argparse.Namespace(upstream="tiny_tera"), "Step": 100,
                "Featurizer": {"weights": torch.tensor([0.5, -1.0, 2.0, 0.0])},
                "Downstream": {"w": torch.zeros(2)}}, downstream)
    config = _config(corpus, tmp_path / "o", "tiny_tera", "starhubert", "star", target="weighted_sum",
                     featurizer_ckpt=str(downstream))
    teacher = load_teacher("s3prl:tiny_tera")
    prepare_teacher(teacher, config)
    assert torch.equal(teacher.sum_weights, torch.softmax(torch.tensor([0.5, -1.0, 2.0, 0.0]), 0))
    assert teacher.student_layer_mapping(4)[-1] == 4
