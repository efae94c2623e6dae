"""Transcribe recordings with a trained ``cif_asr`` experiment in PyTorch, with token times.

    from recycle_distill.recognizer import Recognizer
    transcripts = Recognizer.from_experiment("result/downstream/my_cif").transcribe(["a.wav", wave])

Recordings are batched by length (at most ``batch_seconds`` of padded audio per batch), run
through the experiment's upstream and featurizer as S3PRL runs them, then the recognizer's
beam search; each token's time span comes from the CIF weights (:mod:`.token_times`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from recycle_distill.recognizer.audio import DEFAULT_BATCH_SECONDS, gather_recordings, length_batches
from recycle_distill.recognizer.experiment import LoadedExperiment, load_experiment
from recycle_distill.recognizer.token_times import build_transcript
from recycle_distill.recognizer.transcript import Transcript
from recycle_distill.util.sample_rate import SAMPLE_RATE

__all__ = ["Recognizer", "DEFAULT_BATCH_SECONDS"]

logger = logging.getLogger(__name__)

Wave = Union[str, Path, np.ndarray, torch.Tensor]


class Recognizer:
    """A rebuilt experiment that turns 16 kHz waveforms (or audio files) into :class:`Transcript`\\ s.

    Args:
        experiment: from :func:`~.experiment.load_experiment`.
        batch_seconds: padded audio per batch (count x longest recording).
        progress: show a tqdm bar (seconds of audio done).
    """

    def __init__(self, experiment: LoadedExperiment, batch_seconds: float = DEFAULT_BATCH_SECONDS, progress: bool = False):
        if not batch_seconds > 0:
            raise ValueError(f"batch_seconds must be > 0, got {batch_seconds!r}")
        self.experiment = experiment
        self.batch_seconds = float(batch_seconds)
        self.progress = progress

    @classmethod
    def from_experiment(cls, path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                        upstream_dtype: Optional[str] = None, beam: Optional[int] = None,
                        batch_seconds: float = DEFAULT_BATCH_SECONDS, progress: bool = False) -> "Recognizer":
        """Rebuild the experiment at ``path`` (expdir or checkpoint); ``beam`` replaces its beam size."""
        overrides = {} if beam is None else {"beam_size": beam}
        return cls(load_experiment(path, device, upstream_dtype, **overrides), batch_seconds, progress)

    def transcribe(self, waves: Iterable[Wave], skipped: Optional[list] = None) -> list[Transcript]:
        """One transcript per usable recording, in input order.

        Args:
            waves: 1-D float tensors or arrays at 16 kHz, or audio file paths (read, mixed to
                mono and resampled as :func:`~.audio.read_audio` does).
            skipped: where the recordings left out go, as :class:`~.audio.Skipped` (unreadable,
                empty, too short, non-finite); they are also logged.
        """
        sources, samples = gather_recordings(waves, skipped, _as_numpy)
        results: list[Optional[Transcript]] = [None] * len(samples)
        batches = length_batches([len(s) for s in samples], max(1, int(self.batch_seconds * SAMPLE_RATE)))
        with _progress_bar(sum(len(s) for s in samples) / SAMPLE_RATE, self.progress) as bar:
            for batch in batches:
                for index, transcript in zip(batch, self._batch([samples[i] for i in batch])):
                    results[index] = Transcript(transcript.text, transcript.tokens, sources[index], transcript.duration)
                bar.update(sum(len(samples[i]) for i in batch) / SAMPLE_RATE)
        return [r for r in results if r is not None]

    @torch.no_grad()
    def _batch(self, waves: list[np.ndarray]) -> list[Transcript]:
        exp = self.experiment
        device = next(exp.model.parameters()).device
        tensors = [torch.from_numpy(wave).to(device) for wave in waves]
        features = exp.featurizer(tensors, exp.upstream(tensors))  # B tensors (T_b, D)
        lengths = torch.tensor([len(f) for f in features], device=device)
        padded = pad_sequence([f.float() for f in features], batch_first=True)  # (B, T, D)
        hypotheses, alpha, frames = exp.model.recognize(padded, lengths, exp.decode)
        alpha, frames = alpha.float().cpu().numpy(), frames.cpu().tolist()
        return [build_transcript(hyp, alpha[b, : frames[b]], len(waves[b]) / SAMPLE_RATE, exp.vocab,
                                 exp.frame_seconds, exp.model.model_cfg.cif_threshold, exp.decode.tail_threshold)
                for b, hyp in enumerate(hypotheses)]


def _as_numpy(wave: Any) -> np.ndarray:
    if isinstance(wave, torch.Tensor):
        return wave.detach().to("cpu", torch.float32).numpy()
    return np.asarray(wave, dtype=np.float32)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, amount: float) -> None:
        pass


def _progress_bar(total_seconds: float, show: bool):
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total_seconds, unit="s", desc="transcribing")
