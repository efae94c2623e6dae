"""Corpus-level error rates: the sum of edit distances over the sum of reference lengths.

Averaging per-utterance rates would weigh a two-word utterance like a fifty-word one; the
corpus-level ratio is what ASR papers (and S3PRL's ASR downstream) report. The functions return
fractions (0.25); the expert reports them in percent (25.0), as S3PRL's ASR downstream prints them.
"""

from __future__ import annotations

from typing import Sequence

import editdistance

__all__ = ["edit_counts", "error_rate", "character_error_rate", "word_error_rate"]


def edit_counts(hypotheses: Sequence[Sequence], references: Sequence[Sequence]) -> tuple[int, int]:
    """(sum of edit distances, sum of reference lengths) over paired sequences of any hashable units."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    edits = sum(editdistance.eval(list(h), list(r)) for h, r in zip(hypotheses, references))
    return int(edits), sum(len(r) for r in references)


def error_rate(hypotheses: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Corpus-level error rate of unit sequences; nan when the references are all empty."""
    edits, total = edit_counts(hypotheses, references)
    return edits / total if total else float("nan")


def _characters(text: str) -> list[str]:
    # Spaces are not characters of the transcript: "a b" vs "ab" is a word error, not a CER one.
    return [c for c in text if not c.isspace()]


def character_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """CER over texts, whitespace ignored (Mandarin has none; for English it counts letters)."""
    return error_rate([_characters(h) for h in hypotheses], [_characters(r) for r in references])


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """WER over whitespace-separated words."""
    return error_rate([h.split() for h in hypotheses], [r.split() for r in references])
