"""The batched CIF beam search of ``cif_asr/beam_search.py`` in NumPy, over a decoder-step function.

The same search step for step (one decoder step per firing, every hypothesis scored over its
utterance's firings, the best cut at its first ``<eos>``, banned units never proposed, float32
scores); only the decoder is an ONNX Runtime session behind ``step`` and the cache is the two
stacked arrays it returns. Ties between candidates go to the lower index (a stable sort), where
``torch.topk`` leaves the order open. NumPy only: the torch-free runner uses it.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional

import numpy as np

__all__ = ["beam_search", "StepFunction"]

logger = logging.getLogger(__name__)

# (prev_token (B,), prev_cif (B, d), cif (B, d), keys, values (L, B, H, S, d/H))
#   -> (log_probs (B, V), keys, values (L, B, H, S + 1, d/H))
StepFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                        tuple[np.ndarray, np.ndarray, np.ndarray]]


def _cut_at(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def beam_search(step: StepFunction, cif: np.ndarray, lengths: np.ndarray, *, cache_shape: tuple[int, int, int],
                bos: int, eos: int, beam_size: int = 10, banned: Iterable[int] = (),
                max_steps: Optional[int] = None) -> list[list[int]]:
    """Best unit sequence per utterance (no ``<bos>``/``<eos>``).

    Args:
        step: one decoder step (see :data:`StepFunction`).
        cif: (B, N, d) float32 CIF vectors, left-aligned.
        lengths: (B,) valid vectors (= decoding steps) per utterance.
        cache_shape: (layers, heads, head_dim) of the decoder's key/value cache.
        bos, eos, beam_size, banned, max_steps: as ``cif_asr.beam_search.beam_search``.

    Returns:
        B lists of unit indices.
    """
    batch, frames, dim = cif.shape
    lengths = np.clip(np.asarray(lengths, dtype=np.int64), 0, frames)
    steps = int(lengths.max()) if batch else 0
    if max_steps is not None and steps > max_steps:
        logger.warning("beam search: %d utterance(s) fire more than max_steps=%d times; decoding their first "
                       "%d firings only", int((lengths > max_steps).sum()), max_steps, max_steps)
        lengths, steps = np.minimum(lengths, max_steps), max_steps
    if steps == 0:
        return [[] for _ in range(batch)]
    k = beam_size
    flat_cif = np.repeat(cif.astype(np.float32, copy=False), k, axis=0)  # (B*K, N, d): row b*K + j
    # All hypotheses start identical: only the first may expand at step 1, or the beam fills with copies.
    scores = np.full((batch, k), -np.inf, dtype=np.float32)
    scores[:, 0] = 0.0
    history = np.zeros((batch, k, steps), dtype=np.int64)
    prev_token = np.full(batch * k, bos, dtype=np.int64)
    prev_cif = np.zeros((batch * k, dim), dtype=np.float32)
    layers, heads, head_dim = cache_shape
    keys = np.zeros((layers, batch * k, heads, 0, head_dim), dtype=np.float32)
    values = np.zeros_like(keys)
    banned = sorted(set(banned))
    rows = np.arange(batch)[:, None] * k
    keep_order = np.broadcast_to(np.arange(k), (batch, k))
    batch_rows = np.arange(batch)[:, None]
    for t in range(steps):
        log_probs, keys, values = step(prev_token, prev_cif, flat_cif[:, t], keys, values)
        log_probs = np.array(log_probs, dtype=np.float32)  # a copy: the banned units are overwritten
        if banned:
            log_probs[:, banned] = -np.inf
        vocab = log_probs.shape[-1]
        candidates = (scores[:, :, None] + log_probs.reshape(batch, k, vocab)).reshape(batch, k * vocab)
        width = min(k, k * vocab)
        top_index = np.argsort(-candidates, axis=1, kind="stable")[:, :width]
        top_scores = candidates[batch_rows, top_index]
        if width < k:  # fewer candidates than hypotheses: fill with dead ones
            top_scores = np.concatenate([top_scores, np.full((batch, k - width), -np.inf, np.float32)], axis=1)
            top_index = np.concatenate([top_index, np.repeat(top_index[:, :1], k - width, axis=1)], axis=1)
        # An utterance whose firings are used up keeps its hypotheses unchanged.
        active = (t < lengths)[:, None]
        source = np.where(active, top_index // vocab, keep_order)
        token = np.where(active, top_index % vocab, eos)
        scores = np.where(active, top_scores, scores)
        history = history[batch_rows, source]
        history[:, :, t] = token
        flat_source = (source + rows).reshape(-1)
        keys, values = keys[:, flat_source], values[:, flat_source]
        prev_token = token.reshape(-1)
        prev_cif = flat_cif[:, t]
    best = scores.argmax(axis=1)
    return [_cut_at(history[b, int(best[b]), : int(lengths[b])].tolist(), eos) for b in range(batch)]
