"""When each recognised token was spoken, from the CIF weights (NumPy only, no torch).

Token ``k`` of a CIF recognizer is decoded from the ``k``-th integrated vector, which sums the
encoder frames whose weight went into that integration. A token's time span is therefore the
start of the first frame that gave it weight and the end of the last one (``docs/cif_asr.md``,
"Transcribe"). The firing decisions are the original's float32 ones
(:mod:`recycle_distill.downstreams.cif_asr.firing_rule`), the same the recognizer's CIF makes,
so the spans belong to the vectors the tokens were decoded from.

Used by the PyTorch recognizer and by the ONNX runner (which has no torch).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from recycle_distill.downstreams.cif_asr.firing_rule import firing_decisions
from recycle_distill.downstreams.cif_asr.text import NUM_SPECIALS, UnitVocabulary
from recycle_distill.recognizer.transcript import TokenTime, Transcript

__all__ = ["MIN_SHARE", "build_transcript", "integration_frames", "token_spans", "token_times"]

# A frame belongs to a token when it gave it more than this much of its unit weight. A firing
# frame's remainder can be a rounding-level sliver (1e-7) that batching (other padding, other
# kernels) turns into nothing; such a sliver would move a span by a whole frame.
MIN_SHARE = 1e-3


def integration_frames(alpha, threshold: float = 0.99,
                       tail_threshold: Optional[float] = None) -> list[tuple[int, int]]:
    """(first, last) frame index of every vector the CIF emits for one utterance, in order.

    Args:
        alpha: (T,) the utterance's CIF weights on its valid encoder frames.
        threshold: the firing threshold (``model.cif_threshold``).
        tail_threshold: the decoding tail threshold (``decode.tail_threshold``); None: no tail
            (the leftover after the last firing is dropped).

    Returns:
        One (first, last) pair per emitted vector: the firings, then the tail if emitted. A
        frame gives weight to an integration when its share is above :data:`MIN_SHARE`: a
        firing frame completes one integration and starts the next with what is left of its
        weight. (Every emitted vector has such a frame: a firing frame gives at least
        ``1 - threshold`` and a tail holds more than the tail threshold; a tail made only of
        slivers gets every frame with positive weight.)
    """
    weights = np.asarray(alpha, dtype=np.float32).reshape(-1)
    if tail_threshold is not None:
        # The tail step: one more frame of weight 0, as the recognizer's CIF processes it.
        weights = np.append(weights, np.float32(0.0))
    counts, tail = firing_decisions(weights, threshold, tail_threshold)
    total = int(counts[-1]) if len(counts) else 0
    emitted = total + int(tail)
    if emitted == 0:
        return []
    cumulative = np.cumsum(weights.astype(np.float64))  # exact for float32 weights
    previous_counts = np.concatenate([[0], counts[:-1]])
    previous_cumulative = np.concatenate([[0.0], cumulative[:-1]])
    fired = counts > previous_counts
    # The integration a frame completes (or keeps filling) and, when it fires, the one it starts.
    completing = np.where(fired, counts - previous_cumulative, weights)
    starting = np.where(fired, cumulative - counts, 0.0)
    first, last = _extent(completing, starting, previous_counts, counts, emitted, MIN_SHARE)
    if (last < 0).any():  # only slivers: take every frame with positive weight
        first, last = _extent(completing, starting, previous_counts, counts, emitted, 0.0)
    return list(zip(first.tolist(), last.tolist()))


def _extent(completing: np.ndarray, starting: np.ndarray, previous_counts: np.ndarray, counts: np.ndarray,
            emitted: int, min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(emitted,) first and last frame giving each integration more than ``min_share`` (-1 as
    the last frame of an integration without one)."""
    frames = np.arange(len(counts))
    owners = np.concatenate([previous_counts[completing > min_share], counts[starting > min_share]])
    contributing = np.concatenate([frames[completing > min_share], frames[starting > min_share]])
    keep = owners < emitted  # the open integration is dropped when no tail is emitted
    first = np.full(emitted, len(counts), dtype=np.int64)
    last = np.full(emitted, -1, dtype=np.int64)
    np.minimum.at(first, owners[keep], contributing[keep])
    np.maximum.at(last, owners[keep], contributing[keep])
    return first, last


def token_spans(alpha, frame_seconds: float, duration: float, threshold: float = 0.99,
                tail_threshold: Optional[float] = None) -> list[tuple[float, float]]:
    """(start, end) seconds of every emitted vector: frame ``f`` spans
    ``[f * frame_seconds, (f + 1) * frame_seconds]``, clipped to ``[0, duration]`` (the last
    encoder frame may reach past the end of the recording)."""
    spans = []
    for first, last in integration_frames(alpha, threshold, tail_threshold):
        start = min(first * frame_seconds, duration)
        spans.append((start, min((last + 1) * frame_seconds, duration)))
    return spans


def token_times(tokens: Sequence[Optional[str]], spans: Sequence[tuple[float, float]]) -> tuple[TokenTime, ...]:
    """Pair decoded tokens with the spans of the vectors they came from: token ``k`` with vector
    ``k`` (decoding may stop before the last vector, never after it). A None token (a special
    unit, not shown) keeps its place in the pairing and is left out of the result."""
    if len(tokens) > len(spans):
        raise ValueError(f"{len(tokens)} tokens but only {len(spans)} CIF vectors: a CIF decoder emits at most one "
                         "token per vector")
    return tuple(TokenTime(token, start, end) for token, (start, end) in zip(tokens, spans) if token is not None)


def build_transcript(hypothesis: Sequence[int], alpha: np.ndarray, duration: float, vocab: UnitVocabulary,
                     frame_seconds: float, threshold: float, tail_threshold: float) -> Transcript:
    """One utterance's :class:`Transcript` from its decoded unit indices and its CIF weights (T,);
    the PyTorch recognizer and the ONNX runner both build theirs here."""
    spans = token_spans(alpha, frame_seconds, duration, threshold=threshold, tail_threshold=tail_threshold)
    if not spans:  # nothing fired: the decoder ran on one all-zero vector (docs/cif.md section 8)
        spans = [(0.0, duration)]
    units = vocab.units
    tokens = [units[i] if NUM_SPECIALS <= i < len(units) else None for i in hypothesis]
    return Transcript(vocab.text(vocab.decode(hypothesis)), token_times(tokens, spans), None, duration)
