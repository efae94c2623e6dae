"""SpecAugment on the recognizer's input features: widths scaled to the features fed, masks inside
each utterance (never sized or placed by padding), applied to training batches and never to
evaluation ones."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from recycle_distill.downstreams.cif_asr.config import ConfigError, ExpertSettings, SpecAugmentSettings
from recycle_distill.downstreams.cif_asr.expert import DownstreamExpert
from recycle_distill.downstreams.cif_asr.spec_augment import SpecAugment

from helpers.cif_asr_data import make_librispeech_corpus, write_tiny_bert

ON = SpecAugmentSettings(enabled=True)
SMALL = {"d_model": 32, "conformer_ffn": 64, "conformer_heads": 2, "conformer_kernel": 3,
         "predictor_channels": 32, "decoder_ffn": 64, "decoder_heads": 2}


@pytest.mark.parametrize("dim, rate, freq, time", [
    (80, 160, 27, 50),    # the original's own input: 80 channels at 10 ms, unchanged
    (768, 320, 259, 25),  # 27 * 768 / 80 = 259.2; 0.5 s at 20 ms
    (480, 640, 162, 13),  # 27 * 480 / 80; 0.5 s at 40 ms = 12.5 frames, half rounded up
])
def test_widths_keep_their_share_of_channels_and_their_duration(dim, rate, freq, time):
    augment = SpecAugment(ON, dim, rate)
    assert (augment.freq_width, augment.time_width) == (freq, time)


def _masked_spans(masked: torch.Tensor) -> tuple[list[int], list[int]]:
    """The zeroed frames and channels of ``masked`` (T, D), made from an all-ones input."""
    zero = masked == 0
    frames = [t for t in range(masked.shape[0]) if bool(zero[t].all())]
    channels = [d for d in range(masked.shape[1]) if bool(zero[:, d].all())]
    return frames, channels


@pytest.mark.parametrize("axis", ["time", "channels"])
def test_a_mask_is_one_band_inside_its_utterance_narrower_than_its_maximum(axis):
    torch.manual_seed(0)
    settings = SpecAugmentSettings(enabled=True, freq_masks=int(axis == "channels"), time_masks=int(axis == "time"))
    augment = SpecAugment(settings, 80, 160)
    widest = 50 if axis == "time" else 27
    widths = []
    for _ in range(60):
        lengths = (37, 300, 5)
        for length, masked in zip(lengths, augment([torch.ones(length, 80) for length in lengths])):
            assert masked.shape == (length, 80)
            frames, channels = _masked_spans(masked)
            span = frames if axis == "time" else channels
            zero = masked == 0
            # Only whole frames (time masks) or whole channels (channel masks) are zeroed, in one band.
            assert int(zero.sum()) == len(span) * (80 if axis == "time" else length)
            assert span == list(range(span[0], span[0] + len(span))) if span else True
            assert len(span) < widest
            if length == 300:
                widths.append(len(span))
    assert max(widths) >= widest * 0.8 and min(widths) <= widest * 0.2  # widths spread over [0, max)


def test_padding_neither_sizes_nor_receives_a_time_mask():
    """With max_time_ratio 0.2 a 10-frame utterance gets at most a 1-frame mask (width < 10 * 0.2)
    even beside a 1000-frame one: each utterance is masked alone, before padding."""
    torch.manual_seed(0)
    settings = SpecAugmentSettings(enabled=True, freq_masks=0, time_masks=1, max_time_ratio=0.2)
    augment = SpecAugment(settings, 8, 160)
    widths = set()
    for _ in range(200):
        short, _long = augment([torch.ones(10, 8), torch.ones(1000, 8)])
        frames, _ = _masked_spans(short)
        widths.add(len(frames))
    assert widths == {0, 1}


def test_the_input_tensor_is_left_as_it_was():
    torch.manual_seed(0)
    features = torch.randn(200, 16)
    before = features.clone()
    out = SpecAugment(ON, 16, 320)([features])[0]
    assert torch.equal(features, before) and not torch.equal(out, before)


# -- in the expert -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec_augment")
    texts = {"train-clean-100": ["one two three", "four three two"], "dev-clean": ["three one"],
             "test-clean": ["four four"]}
    return make_librispeech_corpus(root / "LibriSpeech", texts), write_tiny_bert(root / "bert", ["one", "two", "three", "four"])


def _expert(corpus, folder, **spec_augment) -> DownstreamExpert:
    librispeech, bert = corpus
    section = {"corpus": {"name": "librispeech", "root": str(librispeech)}, "lm": {"path": str(bert)},
               "data": {"batch_size": 2, "eval_batch_size": 2}, "model": dict(SMALL), "decode": {"beam_size": 1},
               "spec_augment": spec_augment}
    return DownstreamExpert(16, 320, section, str(folder))


def _fed_to_the_model(expert, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(features given to the expert, padded features the recognizer got) for one batch of ``split``."""
    seen = []
    forward, decode = expert.model.forward, expert.model.decode
    expert.model.forward = lambda padded, *args, **kwargs: seen.append(padded.clone()) or forward(padded, *args, **kwargs)
    expert.model.decode = lambda padded, *args, **kwargs: seen.append(padded.clone()) or decode(padded, *args, **kwargs)
    wavs, *others = next(iter(expert.get_dataloader(split)))
    features = [torch.randn(len(w) // 320, 16) + 3.0 for w in wavs]  # no zeros of their own
    given = torch.nn.utils.rnn.pad_sequence([f.clone() for f in features], batch_first=True)
    expert(split, features, *others, records=defaultdict(list))
    return [(given, padded) for padded in seen]


def test_the_expert_masks_training_features_and_never_evaluation_ones(corpus, tmp_path):
    torch.manual_seed(0)
    expert = _expert(corpus, tmp_path / "exp", enabled=True)
    expert.train()
    (given, fed), = _fed_to_the_model(expert, "train")
    assert fed.shape == given.shape and not torch.equal(fed, given)
    assert bool(((fed == given) | (fed == 0)).all())  # only masked to 0, nothing else changed
    for split in ("dev", "test"):
        for mode in (expert.eval, expert.train):  # S3PRL evaluates in eval mode; either way, no masks
            mode()
            for given, fed in _fed_to_the_model(expert, split):
                assert torch.equal(fed, given), split
    expert.eval()
    (given, fed), = _fed_to_the_model(expert, "train")  # a training split outside training: no masks
    assert torch.equal(fed, given)


def test_off_by_default_and_the_checkpoint_is_the_same_either_way(corpus, tmp_path):
    plain = _expert(corpus, tmp_path / "a")
    assert plain.spec_augment is None
    plain.train()
    (given, fed), = _fed_to_the_model(plain, "train")
    assert torch.equal(fed, given)
    augmented = _expert(corpus, tmp_path / "b", enabled=True)
    assert plain.state_dict().keys() == augmented.state_dict().keys()


@pytest.mark.parametrize("key, value, wanted", [
    ("enabled", "yes", "downstream_expert.spec_augment.enabled: true or false, got 'yes'"),
    ("time_masks", -1, "downstream_expert.spec_augment.time_masks: an integer >= 0, got -1"),
    ("freq_width", 2.5, "downstream_expert.spec_augment.freq_width: an integer >= 0, got 2.5"),
    ("reference_frame_ms", 0, "downstream_expert.spec_augment.reference_frame_ms: a number of milliseconds > 0, got 0"),
    ("max_time_ratio", 1.5, "downstream_expert.spec_augment.max_time_ratio: a number in (0, 1], got 1.5"),
    ("time_mask", 2, "downstream_expert.spec_augment.time_mask: unknown key; did you mean 'time_masks'?"),
])
def test_bad_settings_are_refused_by_key(key, value, wanted):
    section = {"corpus": {"root": "/data"}, "lm": {"path": "/bert"}, "spec_augment": {key: value}}
    with pytest.raises(ConfigError) as caught:
        ExpertSettings.from_dict(section)
    assert str(caught.value) == wanted
