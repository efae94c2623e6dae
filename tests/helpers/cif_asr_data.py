"""Test helpers for the CIF-HieraDist downstream: a tiny random BERT and tiny spoken corpora.

The generators live in the package (``recycle-distill make-data`` uses them too):
``write_tiny_bert`` (:mod:`recycle_distill.lab.make_data.bert`) writes a Hugging Face folder
(random ``BertModel`` + WordPiece tokenizer with its own vocabulary);
``make_librispeech_corpus`` / ``make_aishell_corpus`` (:mod:`recycle_distill.lab.make_data.speech`)
speak given texts with espeak-ng (``en-us`` voices, Mandarin ``cmn``) at 16 kHz in the real
corpora's layouts, falling back loudly to synthetic tones where espeak-ng is missing.
"""

from __future__ import annotations

from recycle_distill.lab.make_data.bert import BERT_SPECIALS, write_tiny_bert  # noqa: F401  (re-exported)
from recycle_distill.lab.make_data.speech import CMN_PITCHES, EN_VOICES, make_aishell_corpus, make_librispeech_corpus
from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = ["BERT_SPECIALS", "CMN_PITCHES", "EN_VOICES", "SAMPLE_RATE", "make_aishell_corpus",
           "make_librispeech_corpus", "write_tiny_bert"]
