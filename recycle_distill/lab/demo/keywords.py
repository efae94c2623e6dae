"""A tiny keyword-spotting set for the demo's downstream probe: Speech Commands' ten words.

Every espeak-ng voice variant of the corpus says every keyword a few times, each time with its
own pitch and speed, so the probe can be trained on some voices and tested on voices it never
heard (the question SUPERB's KS task asks, in miniature). Without espeak-ng the same words
come from the synthetic harmonic voice, and the result says so.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from recycle_distill.training.data.synth import VOICES, _espeak, _harmonic_voice, espeak_available

__all__ = ["KEYWORDS", "KeywordSet", "make_keyword_set"]

# The ten command words of Speech Commands v1 (SUPERB KS), without its silence/unknown classes.
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


@dataclass
class KeywordSet:
    """Keyword clips and labels.

    Attributes:
        waves: (S_i,) 16 kHz float clips.
        labels: (N,) keyword index into :data:`KEYWORDS`.
        voices: (N,) voice index: folds hold out whole voices.
        source: "espeak-ng" or "synthetic".
    """

    waves: list = field(default_factory=list)
    labels: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    voices: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    source: str = ""

    @property
    def num_voices(self) -> int:
        return int(self.voices.max()) + 1 if len(self.voices) else 0


def make_keyword_set(num_voices: int = 12, takes: int = 2, seed: int = 0, use_espeak: bool | None = None,
                     num_threads: int = 4) -> KeywordSet:
    """Every keyword said ``takes`` times by each of ``num_voices`` voices (random pitch/speed).

    Returns:
        :class:`KeywordSet` with ``num_voices * takes * 10`` clips; ``source`` says whether
        espeak-ng or the synthetic fallback spoke them.
    """
    if not 1 <= num_voices <= len(VOICES):
        raise ValueError(f"num_voices must be in [1, {len(VOICES)}], got {num_voices}")
    espeak = espeak_available() if use_espeak is None else use_espeak
    rng = np.random.default_rng(seed)
    jobs = []  # (voice index, keyword index, espeak voice, pitch, speed, f0, seed)
    for voice in range(num_voices):
        f0 = float(rng.uniform(95, 240))
        for _ in range(takes):
            pitch, speed = int(rng.integers(25, 76)), int(rng.integers(120, 200))
            for label in range(len(KEYWORDS)):
                jobs.append((voice, label, VOICES[voice], pitch, speed, f0 * float(rng.uniform(0.9, 1.1)),
                             int(rng.integers(2**31))))

    def render(job: tuple) -> Tensor:
        _, label, voice, pitch, speed, f0, job_seed = job
        if espeak:
            samples = _espeak(KEYWORDS[label], voice, pitch, speed)
        else:
            samples = _harmonic_voice(KEYWORDS[label], f0, np.random.default_rng(job_seed))
        return torch.from_numpy(np.clip(samples, -1.0, 1.0).astype(np.float32))

    # espeak-ng runs are separate processes: threads only wait on them.
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        waves = list(pool.map(render, jobs))
    return KeywordSet(
        waves=waves,
        labels=torch.tensor([job[1] for job in jobs]),
        voices=torch.tensor([job[0] for job in jobs]),
        source="espeak-ng" if espeak else "synthetic",
    )
