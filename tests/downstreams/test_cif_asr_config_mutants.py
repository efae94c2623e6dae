"""The CIF recognizer config's refusals that the mutation run of group ``recognizer2`` found
untested (docs/development.md, Mutation testing): each names its section and key and says what
is wanted, in the words the user reads; S3PRL's unquoted ``-o`` lists are read as lists."""

from __future__ import annotations

import pytest

from recycle_distill.downstreams.cif_asr.config import (
    ConfigError,
    CorpusSettings,
    DecodeConfig,
    ModelConfig,
    SpecAugmentSettings,
)


@pytest.mark.parametrize("build, message", [
    (lambda: DecodeConfig.from_dict(["beam_size", 4]), "decode: expected a mapping of keys, got list"),
    (lambda: ModelConfig.from_dict({"conformer_kernel": 4}),
     "model.conformer_kernel: an odd kernel size (same-length depthwise convolution), got 4"),
    (lambda: ModelConfig.from_dict({"cif_min_frame_ms": 0.0}), "model.cif_min_frame_ms: a period > 0 ms, got 0.0"),
    (lambda: SpecAugmentSettings(max_time_ratio=0.0).check("spec_augment"),
     "spec_augment.max_time_ratio: a number in (0, 1], got 0.0"),
    (lambda: CorpusSettings(root="/data", dev="[]").check("corpus"),
     "corpus.dev: a non-empty list of subset names, got []"),
])
def test_a_refusal_names_the_section_the_key_and_what_is_wanted(build, message):
    with pytest.raises(ConfigError) as error:
        build()
    assert str(error.value) == message


def test_unquoted_lists_from_the_command_line_are_lists_of_names():
    corpus = CorpusSettings(root="/data", train="[train-clean-100, 'train-clean-360']", dev="dev-clean",
                            test='["test-clean"]')
    corpus.check("corpus")
    assert (corpus.train, corpus.dev, corpus.test) == (["train-clean-100", "train-clean-360"], ["dev-clean"],
                                                      ["test-clean"])
    assert SpecAugmentSettings(max_time_ratio=1.0).max_time_ratio == 1.0
