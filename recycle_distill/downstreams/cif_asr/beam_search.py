"""Batched beam search over CIF vectors: exactly one decoder step per firing (``docs/cif.md``).

The number of output tokens is decided by the CIF, not by the decoder: utterance ``b`` is
decoded over exactly ``lengths[b]`` steps, as in the original. Like the original, emitting
``<eos>`` does not end a hypothesis early: every hypothesis of an utterance is scored over the
same number of steps (so a hypothesis cannot win by stopping before its low-probability
steps), and the best one is then cut at its first ``<eos>``. Units that never occur in a target
(CTC blank, padding, ``<bos>``) are excluded from the search.

The decoder is anything with ``step(prev_token, prev_cif, cif, cache) -> (logits, state, cache)``
whose cache has ``reorder(index)`` (:class:`~.decoder.CifDecoder` is one).
"""

from __future__ import annotations

import logging
from typing import Iterable, Optional, Protocol

import torch

__all__ = ["beam_search", "StepDecoder"]

logger = logging.getLogger(__name__)


class StepDecoder(Protocol):
    def step(self, prev_token: torch.Tensor, prev_cif: torch.Tensor, cif: torch.Tensor, cache=None): ...


def _cut_at(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


@torch.no_grad()
def beam_search(decoder: StepDecoder, cif: torch.Tensor, lengths: torch.Tensor, *, bos: int, eos: int,
                beam_size: int = 10, banned: Iterable[int] = (), max_steps: Optional[int] = None) -> list[list[int]]:
    """Best unit sequence per utterance (no ``<bos>``/``<eos>``).

    Args:
        decoder: see the module docstring.
        cif: (B, N, d) CIF vectors, left-aligned.
        lengths: (B,) number of valid CIF vectors (= decoding steps) per utterance.
        bos, eos: special units.
        beam_size: hypotheses kept per utterance; 1 is greedy decoding.
        banned: units never proposed.
        max_steps: guard on the steps per utterance (a warning names the truncated count).

    Returns:
        B lists of unit indices.
    """
    batch, frames, dim = cif.shape
    lengths = lengths.to(device=cif.device, dtype=torch.long).clamp(0, frames)
    steps = int(lengths.max()) if batch else 0
    if max_steps is not None and steps > max_steps:
        logger.warning("beam search: %d utterance(s) fire more than max_steps=%d times; decoding their first "
                       "%d firings only", int((lengths > max_steps).sum()), max_steps, max_steps)
        lengths, steps = lengths.clamp(max=max_steps), max_steps
    if steps == 0:
        return [[] for _ in range(batch)]
    k = beam_size
    flat_cif = cif.repeat_interleave(k, dim=0)  # (B*K, N, d): hypothesis j of utterance b at row b*K + j
    # All hypotheses start identical: only the first may expand at step 1, or the beam fills with copies.
    scores = torch.full((batch, k), float("-inf"), device=cif.device)
    scores[:, 0] = 0.0
    history = torch.zeros(batch, k, steps, dtype=torch.long, device=cif.device)
    prev_token = torch.full((batch * k,), bos, dtype=torch.long, device=cif.device)
    prev_cif = torch.zeros(batch * k, dim, dtype=cif.dtype, device=cif.device)
    banned = sorted(set(banned))
    rows = torch.arange(batch, device=cif.device).unsqueeze(1) * k
    keep_order = torch.arange(k, device=cif.device).expand(batch, k)
    cache = None
    for t in range(steps):
        logits, _, cache = decoder.step(prev_token, prev_cif, flat_cif[:, t], cache)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        if banned:
            log_probs[:, banned] = float("-inf")
        vocab = log_probs.shape[-1]
        candidates = (scores.unsqueeze(-1) + log_probs.view(batch, k, vocab)).view(batch, k * vocab)
        top_scores, top_index = candidates.topk(k, dim=1)  # k * vocab >= k candidates: vocab >= 1
        # An utterance whose firings are used up keeps its hypotheses unchanged.
        active = (t < lengths).unsqueeze(1)
        source = torch.where(active, torch.div(top_index, vocab, rounding_mode="floor"), keep_order)
        token = torch.where(active, top_index % vocab, torch.full_like(top_index, eos))
        scores = torch.where(active, top_scores, scores)
        history = history.gather(1, source.unsqueeze(-1).expand(-1, -1, steps)).clone()
        history[:, :, t] = token
        flat_source = (source + rows).view(-1)
        cache = cache.reorder(flat_source)
        prev_token = token.view(-1)
        prev_cif = flat_cif[:, t]
    best = scores.argmax(dim=1)
    results = []
    for b in range(batch):
        tokens = history[b, int(best[b]), : int(lengths[b])].tolist()
        results.append(_cut_at(tokens, eos))
    return results
