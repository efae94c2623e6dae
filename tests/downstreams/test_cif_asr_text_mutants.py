"""Units, fingerprints and the unit vocabulary: promises that the mutation run of group
``recognizer2`` found untested (docs/development.md, Mutation testing). A tokenizer with only the
slow API (``tokenize``, no offsets) stands in where the tiny BERT of the other tests is fast."""

from __future__ import annotations

import json

import pytest

from recycle_distill.downstreams.cif_asr.text import (
    PROBLEM_LOST,
    PROBLEM_UNKNOWN,
    SPECIALS,
    UNK,
    UnitVocabulary,
    tokenizer_fingerprint,
    transcript_units,
)


class SlowTokenizer:
    """The slow tokenizer API only (no ``is_fast``, no offsets); ``drop`` characters vanish."""

    def __init__(self, vocab: dict[str, int], drop: str = "", unk_token: str = "[UNK]", lower: bool = True):
        self.vocab, self.drop, self.unk_token, self.do_lower_case = vocab, drop, unk_token, lower
        self.cls_token, self.sep_token, self.pad_token = "[CLS]", "[SEP]", "[PAD]"
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id = 0, 1, 2, 3

    def tokenize(self, text: str) -> list[str]:
        pieces = list(text) if all(ord(char) > 0x2E80 or char.isspace() for char in text) else text.split()
        return [piece if piece in self.vocab else self.unk_token for piece in pieces
                if not piece.isspace() and piece not in self.drop]

    def convert_tokens_to_ids(self, pieces):
        return [self.vocab.get(piece, 1) for piece in pieces]

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)


ZH = {"今": 10, "天": 11, "好": 12}
EN = {"the": 10, "cat": 11}


def test_a_slow_tokenizer_gives_units_and_problems_without_offsets():
    assert transcript_units("今天好", SlowTokenizer(ZH), "zh").units == ["今", "天", "好"]
    lost = transcript_units("今天好", SlowTokenizer(ZH, drop="好"), "zh")
    assert lost.problems == [f"{PROBLEM_LOST}: 3 characters, 2 pieces"]
    unknown = transcript_units("the dog", SlowTokenizer(EN), "en")
    assert unknown.units == ["the", "[UNK]"] and unknown.problems == [f"{PROBLEM_UNKNOWN}: '[UNK]'"]


def test_the_fingerprint_sees_the_unknown_token_and_lower_casing():
    base = tokenizer_fingerprint(SlowTokenizer(EN))
    assert tokenizer_fingerprint(SlowTokenizer(EN)) == base
    assert tokenizer_fingerprint(SlowTokenizer(EN, unk_token="<unk>")) != base
    assert tokenizer_fingerprint(SlowTokenizer(EN, lower=False)) != base
    assert tokenizer_fingerprint(SlowTokenizer({**EN, "dog": 12})) != base


def vocabulary(units: list[str], language: str = "en") -> UnitVocabulary:
    return UnitVocabulary(list(SPECIALS) + units, [0, 0, 2, 3, 1] + list(range(10, 10 + len(units))), language, "fp")


def test_units_sharing_a_language_model_id_are_ordered_by_name():
    tokenizer = SlowTokenizer({"b": 7, "a": 7, "c": 5})
    split = transcript_units("b a c", tokenizer, "en")
    assert split.lm_ids == [7, 7, 5]
    assert UnitVocabulary.build([split], tokenizer, "en").units[len(SPECIALS):] == ["c", "a", "b"]


def test_index_words_and_text_follow_the_language_asked_for():
    vocab = vocabulary(["the", "cat", "##s", "我", "们"])
    assert vocab.index("cat") == 6 and vocab.index("dog") == UNK
    assert vocab.words(["##s", "the"]) == ["s", "the"]  # a continuation with nothing before starts a word
    assert vocab.text(["我", "们"], "zh") == "我们" and vocab.text(["我", "们"]) == "我 们"


def test_a_vocabulary_without_the_specials_or_a_tokenizer_without_pad_is_refused_in_words():
    with pytest.raises(ValueError) as error:
        UnitVocabulary(["a", "b", "c", "d", "e"], [0] * 5, "en", "fp")
    assert str(error.value) == f"a unit vocabulary starts with {SPECIALS}, got ['a', 'b', 'c', 'd', 'e']"
    tokenizer = SlowTokenizer(EN)
    tokenizer.pad_token_id = None
    with pytest.raises(ValueError) as error:
        UnitVocabulary.build([transcript_units("the", tokenizer, "en")], tokenizer, "en")
    assert str(error.value) == "the tokenizer lacks one of the pad, [CLS], [SEP] or unknown tokens"


def test_loading_another_format_names_it(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"format": "cif-asr-vocab/0"}))
    with pytest.raises(ValueError) as error:
        UnitVocabulary.load(tmp_path)
    assert str(error.value) == (f"{tmp_path / 'vocab.json'}: not a CIF unit vocabulary (format 'cif-asr-vocab/0', "
                                "expected 'cif-asr-vocab/1')")
