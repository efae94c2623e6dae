"""CIF recognizer model side: config, encoder pooling/padding, loss assembly, decoder, beam search,
metrics (rules in docs/cif.md)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from recycle_distill.downstreams.cif_asr.beam_search import beam_search
from recycle_distill.downstreams.cif_asr.config import (
    CifAsrConfig,
    CifConfigError,
    DecodeConfig,
    ExpertSettings,
    LossConfig,
    ModelConfig,
)
from recycle_distill.downstreams.cif_asr.decoder import CifDecoder
from recycle_distill.downstreams.cif_asr.metrics import character_error_rate, error_rate, word_error_rate
from recycle_distill.downstreams.cif_asr.model import CifRecognizer, CifFrameRateError, plan_poolings
from recycle_distill.util.config_check import ConfigError

BLANK, PAD, BOS, EOS = 0, 1, 2, 3
VOCAB = 12
UPSTREAM_DIM, LM_DIM = 24, 16
SMALL = dict(d_model=32, conformer_ffn=64, conformer_kernel=5, predictor_channels=32, decoder_ffn=64)


def small_model(rate: int = 320, loss: LossConfig | None = None, lm_dim: int | None = LM_DIM, **sizes):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**SMALL, **sizes})
    return CifRecognizer(cfg, loss or LossConfig(), UPSTREAM_DIM, rate, VOCAB, lm_dim=lm_dim)


def batch(lengths=(50, 37, 20), token_lengths=(6, 4, 3), seed=1):
    """features (B, T, F), feature lengths, targets (EOS-terminated, PAD-padded), target lengths, LM vectors."""
    g = torch.Generator().manual_seed(seed)
    feature_lengths = torch.tensor(lengths)
    features = torch.randn(len(lengths), max(lengths), UPSTREAM_DIM, generator=g)
    target_lengths = torch.tensor(token_lengths)
    targets = torch.randint(4, VOCAB, (len(lengths), max(token_lengths)), generator=g)
    for b, n in enumerate(token_lengths):
        targets[b, n - 1] = EOS
        targets[b, n:] = PAD
    lm = torch.randn(len(lengths), max(token_lengths), LM_DIM, generator=g)
    return features, feature_lengths, targets, target_lengths, lm


# ----------------------------------------------------------------------------- config


def test_config_unknown_key_names_the_closest():
    with pytest.raises(ConfigError, match=r"^model\.d_modle: unknown key; did you mean 'd_model'\?$"):
        ModelConfig.from_dict({"d_modle": 8})
    with pytest.raises(ConfigError, match=r"^loss\.acd_temprature: unknown key; did you mean 'acd_temperature'\?$"):
        CifAsrConfig.from_dict({"loss": {"acd_temprature": 0.1}})
    with pytest.raises(ConfigError, match=r"^decod: unknown section; did you mean 'decode'\?$"):
        CifAsrConfig.from_dict({"decod": {}})


def test_config_ranges_name_the_key():
    with pytest.raises(ConfigError, match=r"^model\.conformer_dropout: a number in \[0, 1\), got 1\.5$"):
        ModelConfig.from_dict({"conformer_dropout": 1.5})
    with pytest.raises(ConfigError, match=r"^model\.decoder_heads: a divisor of d_model \(96\), got 5$"):
        ModelConfig.from_dict({"d_model": 96, "decoder_heads": 5})
    with pytest.raises(ConfigError, match=r"^decode\.beam_size: a positive integer, got 0$"):
        DecodeConfig.from_dict({"beam_size": 0})
    with pytest.raises(ConfigError, match=r"^loss\.lrd: a finite number >= 0, got -0\.01$"):
        LossConfig.from_dict({"lrd": -0.01})


def test_config_errors_are_the_packages_one_config_error():
    # The old name stays importable; the CLI's exit status 2 goes by the class name ConfigError.
    assert CifConfigError is ConfigError
    with pytest.raises(ConfigError) as caught:
        ExpertSettings.from_dict({"corpus": {"root": "/r"}, "lm": {"path": "/p"}, "loss": {"ctc": -1}})
    assert type(caught.value).__name__ == "ConfigError" and str(caught.value) == "loss.ctc: a finite number >= 0, got -1"


@pytest.mark.parametrize("section, key, value, wanted", [
    ("model", "cif_threshold", True, "a number in (0, 1]"),
    ("model", "cif_threshold", "0.9", "a number in (0, 1]"),
    ("model", "cif_threshold", None, "a number in (0, 1]"),
    ("loss", "acd_temperature", True, "a number > 0"),
    ("decode", "tail_threshold", False, "a number in [0, 1)"),
    ("model", "d_model", True, "a positive integer"),
    ("model", "conformer_dropout", False, "a number in [0, 1)"),
])
def test_config_numbers_are_never_bools_or_text(section, key, value, wanted):
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: {re.escape(wanted)}, got {re.escape(repr(value))}$"):
        CifAsrConfig.from_dict({section: {key: value}})


def test_expert_data_numbers_are_never_bools():
    base = {"corpus": {"root": "/r"}, "lm": {"path": "/p"}}
    with pytest.raises(ConfigError, match=r"^downstream_expert\.data\.num_workers: an integer >= 0, got False$"):
        ExpertSettings.from_dict({**base, "data": {"num_workers": False}})
    with pytest.raises(ConfigError, match=r"^downstream_expert\.data\.max_seconds: null or a number of seconds > 0, got True$"):
        ExpertSettings.from_dict({**base, "data": {"max_seconds": True}})
    assert ExpertSettings.from_dict({**base, "data": {"max_seconds": 12, "num_workers": 0}}).data.max_seconds == 12


def test_config_defaults_are_the_published_ones():
    cfg = CifAsrConfig.from_dict({"loss": {"acd": 1.0, "lrd": 0.01}})
    m = cfg.model
    assert (m.d_model, m.conformer_stacks, m.conformer_layers, m.conformer_heads, m.conformer_ffn) == (256, 3, 2, 4, 1024)
    assert (m.conformer_kernel, m.predictor_channels, m.cif_threshold, m.decoder_layers, m.embed_scale) == (15, 256, 0.99, 2, 16.0)
    assert (cfg.loss.ctc, cfg.loss.quantity, cfg.loss.acd, cfg.loss.lrd, cfg.loss.acd_negatives) == (0.5, 1.0, 1.0, 0.01, 700)
    assert (cfg.decode.beam_size, cfg.decode.tail_threshold) == (10, 0.4)
    assert LossConfig().acd == 0.0 and LossConfig().lrd == 0.0  # plain CIF by default


# ----------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("rate,expected", [(320, (0, 2)), (160, (1, 2)), (640, (0, 1)), (1280, (0, 0)), (80, (2, 2))])
def test_pooling_plan_reaches_the_cif_window(rate, expected):
    assert plan_poolings(rate, stacks=3) == expected


def test_unreachable_rate_is_refused_with_the_reason():
    message = (r"upstream frame period 55 ms \(downsample rate 880 at 16 kHz\) cannot reach the CIF window 60-100 ms "
               r"by x2 max-pooling \(reachable: 55, 110 ms\)")
    with pytest.raises(CifFrameRateError, match=message):
        small_model(rate=880)
    with pytest.raises(CifFrameRateError, match=r"period 120 ms .* \(reachable: 120 ms\)"):
        plan_poolings(1920, stacks=3)


@pytest.mark.parametrize("rate,expected", [(320, [13, 10, 5]), (160, [7, 5, 3])])
def test_encoder_pools_lengths_with_the_frames(rate, expected):
    model = small_model(rate=rate).eval()
    features, lengths, *_ = batch()
    hidden, pooled = model.encoder(features, lengths)
    assert pooled.tolist() == expected
    assert hidden.shape == (3, max(expected), SMALL["d_model"])
    assert model.encoder.output_rate == 1280
    for b, n in enumerate(expected):  # padded frames are zero, valid ones are not
        assert hidden[b, n:].abs().sum() == 0
        assert hidden[b, :n].abs().sum(-1).min() > 0


def test_masked_conformer_layers_equal_torchaudio_without_padding():
    """Our masked re-run of torchaudio's layers changes nothing where there is nothing to mask."""
    from recycle_distill.downstreams.cif_asr.model import _conformer_layer

    model = small_model().eval()
    stack = model.encoder.stacks[0]
    x = torch.randn(2, 17, SMALL["d_model"])
    reference, _ = stack(x, torch.tensor([17, 17]))
    ours = x
    for layer in stack.conformer_layers:
        ours = _conformer_layer(layer, ours, torch.zeros(2, 17, dtype=torch.bool))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_padded_frames_change_nothing():
    model = small_model(rate=160, loss=LossConfig(acd=1.0, lrd=0.01))
    features, lengths, targets, target_lengths, lm = batch()
    noisy = features.clone()
    for b, n in enumerate(lengths.tolist()):
        noisy[b, n:] = 1e3 * torch.randn_like(noisy[b, n:])
    for mode in ("train", "eval"):
        model.train(mode == "train")
        outs = []
        for x in (features, noisy):
            torch.manual_seed(5)  # same dropout masks
            outs.append(model(x, lengths, targets, target_lengths, lm, generator=torch.Generator().manual_seed(3)))
        for name in outs[0].terms:
            assert torch.equal(outs[0].terms[name], outs[1].terms[name]), (mode, name)
    model.eval()
    assert model.decode(features, lengths, DecodeConfig(beam_size=3)) == model.decode(noisy, lengths, DecodeConfig(beam_size=3))


def test_utterance_alone_equals_utterance_in_a_padded_batch():
    model = small_model(rate=160).eval()
    features, lengths, *_ = batch()
    hidden, pooled = model.encoder(features, lengths)
    alone, alone_len = model.encoder(features[2:, :20], lengths[2:])
    assert alone_len.tolist() == [pooled[2].item()]
    torch.testing.assert_close(alone[0], hidden[2, : alone_len[0]], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- loss


def _ctc_forward(log_probs: torch.Tensor, labels: list[int], blank: int) -> float:
    """-log p(labels | frames) by the textbook alpha recursion (float64). log_probs: (T, V)."""
    lp = log_probs.double()
    ext = [blank]
    for unit in labels:
        ext += [unit, blank]
    neg = -math.inf
    alpha = [neg] * len(ext)
    alpha[0] = lp[0, blank].item()
    if len(ext) > 1:
        alpha[1] = lp[0, ext[1]].item()
    for t in range(1, lp.shape[0]):
        new = [neg] * len(ext)
        for s in range(len(ext)):
            terms = [alpha[s]] + ([alpha[s - 1]] if s >= 1 else [])
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                terms.append(alpha[s - 2])
            top = max(terms)
            if top > neg:
                new[s] = top + math.log(sum(math.exp(x - top) for x in terms)) + lp[t, ext[s]].item()
        alpha = new
    ends = [alpha[-1]] + ([alpha[-2]] if len(ext) > 1 else [])
    top = max(ends)
    return -(top + math.log(sum(math.exp(x - top) for x in ends)))


def test_loss_is_ce_plus_quantity_plus_ctc_over_tokens():
    """The total against an independent computation: the decoder run step by step, label smoothing
    written out, the CTC by its forward recursion."""
    model = small_model(rate=320, loss=LossConfig(), lm_dim=None).eval()
    features, lengths, targets, target_lengths, _ = batch(lengths=(60, 44), token_lengths=(4, 3))
    out = model(features, lengths, targets, target_lengths)
    from recycle_distill.downstreams.cif_asr.cif import continuous_integrate_and_fire

    with torch.no_grad():
        hidden, enc_lengths = model.encoder(features, lengths)
        padding = torch.arange(hidden.shape[1]) >= enc_lengths[:, None]
        alpha = model.weight_predictor(hidden, padding)
        cif = continuous_integrate_and_fire(hidden, alpha, padding, target_lengths=target_lengths)
        ce = quantity = ctc = 0.0
        eps = 0.1
        for b in range(2):
            n = int(target_lengths[b])
            assert int(cif.fired_lengths[b]) == n
            quantity += abs(alpha[b].sum().item() - n)
            prev_token, prev_cif, cache = torch.tensor([BOS]), torch.zeros(1, hidden.shape[-1]), None
            for t in range(n):
                logits, _, cache = model.decoder.step(prev_token, prev_cif, cif.fired[b, t][None], cache)
                logp = torch.log_softmax(logits[0].double(), -1)
                y = int(targets[b, t])
                ce += -(1 - eps) * logp[y].item() - eps * logp.mean().item()
                prev_token, prev_cif = torch.tensor([y]), cif.fired[b, t][None]
            ctc_lp = torch.log_softmax(model.ctc_head(hidden[b, : enc_lengths[b]]).double(), -1)
            ctc += _ctc_forward(ctc_lp, targets[b, : n - 1].tolist(), BLANK)
    tokens = int(target_lengths.sum())
    assert out.stats["num_tokens"] == tokens
    assert out.terms["ce"].item() == pytest.approx(ce, rel=1e-4)
    assert out.terms["quantity"].item() == pytest.approx(quantity, rel=1e-4)
    assert out.terms["ctc"].item() == pytest.approx(ctc, rel=1e-4)
    assert out.terms["acd"].item() == 0 and out.terms["lrd"].item() == 0
    assert out.loss.item() == pytest.approx((ce + quantity + 0.5 * ctc) / tokens, rel=1e-4)


def test_hieradist_terms_are_finite_and_gradients_reach_everything():
    model = small_model(rate=320, loss=LossConfig(acd=1.0, lrd=0.01)).train()
    out = model(*batch(), generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {"ce", "quantity", "ctc", "acd", "lrd"}
    assert all(torch.isfinite(v) and v.item() > 0 for v in out.terms.values())
    assert 0.0 <= out.stats["acd_accuracy"] <= 1.0 and out.stats["acd_skipped"] == 0.0
    weighted = sum(w * out.terms[k] for k, w in dict(ce=1, quantity=1, ctc=0.5, acd=1, lrd=0.01).items())
    assert out.loss.item() == pytest.approx(weighted.item() / 13, rel=1e-6)
    out.loss.backward()
    for name in ("encoder.input_proj.weight", "acd_proj.weight", "lrd_proj.weight", "weight_predictor.conv.weight",
                 "decoder.embed.weight", "ctc_head.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_acd_with_a_single_token_is_skipped_and_counted():
    model = small_model(loss=LossConfig(acd=1.0))
    features, lengths, targets, target_lengths, lm = batch(lengths=(40,), token_lengths=(1,))
    out = model(features, lengths, targets, target_lengths, lm)
    assert out.stats["acd_skipped"] == 1.0 and math.isnan(out.stats["acd_accuracy"])
    assert out.terms["acd"].item() == 0.0 and torch.isfinite(out.loss)
    out.loss.backward()


def test_distillation_needs_the_language_model():
    with pytest.raises(ValueError, match="need the language model's width"):
        small_model(loss=LossConfig(lrd=0.01), lm_dim=None)
    model = small_model(loss=LossConfig(acd=1.0))
    features, lengths, targets, target_lengths, _ = batch()
    with pytest.raises(ValueError, match="need language-model vectors"):
        model(features, lengths, targets, target_lengths, None)


# ----------------------------------------------------------------------------- decoder


def test_incremental_decoding_equals_teacher_forcing():
    torch.manual_seed(0)
    decoder = CifDecoder(VOCAB, 32, layers=2, heads=4, ffn_dim=64, padding_idx=PAD).eval()
    cif = torch.randn(3, 7, 32)
    prev = torch.randint(4, VOCAB, (3, 7))
    prev[:, 0] = BOS
    full = decoder(prev, cif)
    cache, prev_cif = None, torch.zeros(3, 32)
    for t in range(7):
        logits, state, cache = decoder.step(prev[:, t], prev_cif, cif[:, t], cache)
        torch.testing.assert_close(logits, full.logits[:, t], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state, full.state[:, t], atol=1e-5, rtol=1e-5)
        prev_cif = cif[:, t]
    # causal: later inputs do not change earlier outputs
    changed = decoder(torch.cat([prev[:, :4], torch.full((3, 3), 5)], 1), torch.cat([cif[:, :4], torch.randn(3, 3, 32)], 1))
    torch.testing.assert_close(changed.logits[:, :4], full.logits[:, :4])


# ----------------------------------------------------------------------------- beam search

A, B, C = 4, 5, 6


class _Stateless:
    def reorder(self, index):
        return self


class BigramDecoder:
    """Next-unit probabilities depend on the previous unit only: greedy takes A (0.6) then is stuck
    with weak continuations, the beam finds B (0.4) -> C (0.99) -> <eos> (0.99)."""

    def __init__(self):
        table = torch.full((8, 8), 1e-9)
        table[BOS, A], table[BOS, B] = 0.6, 0.4
        table[A, C], table[A, EOS], table[A, A] = 0.36, 0.34, 0.30
        table[B, C] = 0.99
        table[C, EOS] = 0.99
        table[EOS, EOS] = 0.99
        self.log_table = table.log()
        self.calls = 0

    def step(self, prev_token, prev_cif, cif, cache=None):
        self.calls += 1
        return self.log_table[prev_token], None, _Stateless()


def test_beam_finds_what_greedy_misses():
    cif = torch.zeros(2, 3, 4)
    lengths = torch.tensor([3, 1])
    kwargs = dict(bos=BOS, eos=EOS, banned=(BLANK, PAD, BOS))
    decoder = BigramDecoder()
    assert beam_search(decoder, cif, lengths, beam_size=1, **kwargs) == [[A, C], [A]]
    assert decoder.calls == 3  # one step per firing of the longest utterance
    assert beam_search(BigramDecoder(), cif, lengths, beam_size=2, **kwargs) == [[B, C], [A]]
    # an utterance with a single firing, alone
    assert beam_search(BigramDecoder(), cif[1:, :1], lengths[1:], beam_size=3, **kwargs) == [[A]]


def _greedy(decoder, cif, n, banned):
    tokens, prev_token, prev_cif, cache = [], torch.tensor([BOS]), torch.zeros(1, cif.shape[-1]), None
    for t in range(n):
        logits, _, cache = decoder.step(prev_token, prev_cif, cif[t][None], cache)
        logits[0, list(banned)] = -math.inf
        prev_token, prev_cif = logits.argmax(-1), cif[t][None]
        tokens.append(int(prev_token))
    return tokens[: tokens.index(EOS)] if EOS in tokens else tokens


def test_beam_one_is_greedy_and_batches_equal_single_utterances():
    torch.manual_seed(1)
    decoder = CifDecoder(VOCAB, 16, layers=2, heads=2, ffn_dim=32, padding_idx=PAD).eval()
    with torch.no_grad():  # make <eos> likely somewhere so the cut is exercised
        decoder.vocab_proj.bias[EOS] += 1.5
    cif = 3 * torch.randn(4, 9, 16)
    lengths = torch.tensor([9, 1, 5, 7])
    kwargs = dict(bos=BOS, eos=EOS, banned=(BLANK, PAD, BOS))
    greedy = [_greedy(decoder, cif[b], int(lengths[b]), kwargs["banned"]) for b in range(4)]
    assert beam_search(decoder, cif, lengths, beam_size=1, **kwargs) == greedy
    assert any(len(g) < n for g, n in zip(greedy, lengths.tolist()))  # some hypothesis was cut at <eos>
    batched = beam_search(decoder, cif, lengths, beam_size=4, **kwargs)
    single = [beam_search(decoder, cif[b:b + 1, : lengths[b]], lengths[b:b + 1], beam_size=4, **kwargs)[0]
              for b in range(4)]
    assert batched == single
    assert all(EOS not in h and BOS not in h and PAD not in h and BLANK not in h for h in batched)


def test_decode_gives_lists_of_units():
    model = small_model().eval()
    features, lengths, *_ = batch()
    hyps = model.decode(features, lengths, DecodeConfig(beam_size=2, tail_threshold=0.4))
    assert len(hyps) == 3 and all(isinstance(u, int) and u not in (BLANK, PAD, BOS, EOS) for h in hyps for u in h)


# ----------------------------------------------------------------------------- metrics


def test_error_rates_are_corpus_level():
    # 1 substitution in a 4-word reference + 1 deletion in a 1-word one = 2 / 5 (per-utterance mean: 0.625)
    assert word_error_rate(["a b x d", ""], ["a b c d", "e"]) == pytest.approx(0.4)
    assert character_error_rate(["abd", "xy"], ["abcd", "xyz"]) == pytest.approx(2 / 7)
    assert character_error_rate(["a b"], ["ab"]) == 0.0  # whitespace is not a character
    assert error_rate([[1, 2, 3]], [[1, 3]]) == pytest.approx(0.5)
    assert math.isnan(word_error_rate([""], [""]))
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        error_rate([[1], [2]], [[1]])
