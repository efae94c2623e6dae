"""What a recognizer returns for one recording, the same from PyTorch and from ONNX Runtime.

Standard library only: the torch-free ONNX runner builds these too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class TokenTime:
    """One output unit and the span of upstream frames its firing integrated.

    ``start`` is the start time of the first frame that contributed weight to the token and
    ``end`` the end time of the last one, in seconds from the start of the recording.
    """

    token: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    """The recognizer's output for one recording.

    ``text`` is what a reader sees (word pieces joined, ``##`` removed); ``tokens`` the units in
    order, each with its time span; ``source`` the file it came from, when it came from one;
    ``duration`` the recording's length in seconds at 16 kHz.
    """

    text: str
    tokens: tuple[TokenTime, ...] = field(default_factory=tuple)
    source: Optional[str] = None
    duration: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"source", "duration", "text", "tokens": [{"token", "start", "end"}]}``."""
        out = asdict(self)
        out["tokens"] = [asdict(t) for t in self.tokens]
        return out
