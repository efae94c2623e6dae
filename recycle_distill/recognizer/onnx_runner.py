"""Run an exported recognizer with ONNX Runtime and NumPy alone: no torch at run time.

    from recycle_distill.recognizer.onnx_runner import OnnxRecognizer
    transcripts = OnnxRecognizer.from_folder("digits-onnx").transcribe([wave])  # (S,) float32 at 16 kHz

The folder is what ``recycle-distill export <experiment> --format onnx`` writes
(:mod:`.onnx_format`). Before anything runs, the folder is checked: ``recognizer.json`` (format,
version, every number in range), each graph (no control flow, no data in other files, unless
``allow_any_graph``; the inputs and outputs by name, element type and rank; sizes against the
metadata), and ``vocab.json`` against the decoder's output size. Recordings are batched and
padded as the PyTorch recognizer batches them (:func:`~.audio.length_batches`), so both see the
same batches; an utterance the original's float32 loop decides otherwise than the loop-free
graph is integrated again in NumPy (:mod:`.onnx_near_ties`, as the PyTorch CIF settles it); the
beam search is :mod:`.onnx_beam_search`, token times :mod:`.token_times`.

Imports neither torch nor any module that does (checked by a test that makes ``import torch``
fail); reading a file at another sample rate resamples with torchaudio, so pass 16 kHz audio
where torch is absent.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from recycle_distill.downstreams.cif_asr.text import UnitVocabulary
from recycle_distill.inference.onnx_checks import check_onnx_graph, import_onnx_package
from recycle_distill.recognizer.audio import gather_recordings, length_batches
from recycle_distill.recognizer.onnx_beam_search import beam_search
from recycle_distill.recognizer.onnx_format import ACOUSTIC_FILE, DECODER_FILE, GRAPHS, VOCAB_FILE, read_metadata
from recycle_distill.recognizer.onnx_near_ties import settle_near_ties
from recycle_distill.recognizer.token_times import build_transcript
from recycle_distill.recognizer.transcript import Transcript
from recycle_distill.util.messages import plain, short_repr
from recycle_distill.util.options import check_bool, check_whole_number

__all__ = ["OnnxRecognizer", "DEFAULT_BATCH_SECONDS", "MAX_THREADS"]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SECONDS = 60.0  # as the PyTorch recognizer
MAX_THREADS = 256  # as the students' runner: one OS thread each
Wave = Union[str, Path, np.ndarray, Sequence[float]]


def _check_signature(session: Any, name: str, path: str, metadata: dict) -> None:
    """The graph's inputs and outputs: names, element types, ranks, and the sizes it fixes
    (width, vocabulary, cache layout) against ``recognizer.json``."""
    shown = plain(path)
    for kind, declared, wanted in (("input", session.get_inputs(), GRAPHS[name][0]),
                                   ("output", session.get_outputs(), GRAPHS[name][1])):
        names = [arg.name for arg in declared]
        if sorted(names) != sorted(wanted):
            raise ValueError(f"{shown}: the graph's {kind}s are {short_repr(names)}; an exported recognizer's "
                             f"{name} has {', '.join(wanted)}")
        for arg in declared:
            element, rank = wanted[arg.name]
            if arg.type != element or (arg.shape and len(arg.shape) != rank):
                raise ValueError(f"{shown}: {kind} {arg.name!r} is {plain(arg.type, 60)} of rank "
                                 f"{len(arg.shape or [])}; exports write {element} of rank {rank}")
    heads = metadata["decoder_heads"]
    sizes = {  # (name, axis) -> (metadata key, expected size)
        ACOUSTIC_FILE: {("cif", 2): ("d_model", metadata["d_model"])},
        DECODER_FILE: {("log_probs", 1): ("vocab_size", metadata["vocab_size"]),
                       ("prev_cif", 1): ("d_model", metadata["d_model"]),
                       ("past_keys", 0): ("decoder_layers", metadata["decoder_layers"]),
                       ("keys", 0): ("decoder_layers", metadata["decoder_layers"]),
                       ("keys", 2): ("decoder_heads", heads),
                       ("keys", 4): ("d_model / decoder_heads", metadata["d_model"] // heads)},
    }[name]
    shapes = {arg.name: arg.shape for arg in list(session.get_inputs()) + list(session.get_outputs())}
    for (arg, axis), (key, expected) in sizes.items():
        size = shapes[arg][axis] if shapes[arg] else None
        if isinstance(size, int) and size != expected:
            raise ValueError(f"{shown}: {arg!r} has size {size} on axis {axis}, but recognizer.json key "
                             f"{key!r} gives {expected}")


class OnnxRecognizer:
    """An exported recognizer folder, run with ONNX Runtime.

    Args:
        folder: the exported folder.
        threads: ONNX Runtime intra-op threads, 1 to :data:`MAX_THREADS` (default: ONNX Runtime's).
        beam: beam size replacing the exported one.
        batch_seconds: padded audio per batch (count x longest recording), as the PyTorch recognizer.
        allow_any_graph: run graphs holding what our exports never write (control flow, data in
            other files); only for folders you trust.
        providers: ONNX Runtime execution providers (default: the CPU provider).
    """

    def __init__(self, folder: Union[str, os.PathLike], *, threads: Optional[int] = None, beam: Optional[int] = None,
                 batch_seconds: float = DEFAULT_BATCH_SECONDS, allow_any_graph: bool = False,
                 providers: Optional[Sequence[str]] = None) -> None:
        if threads is not None:
            threads = check_whole_number(threads, "threads", 1, MAX_THREADS)
        if beam is not None:
            beam = check_whole_number(beam, "beam", 1, 10000)
        if (isinstance(batch_seconds, bool) or not isinstance(batch_seconds, (int, float))
                or not 0 < batch_seconds < math.inf):
            raise ValueError(f"batch_seconds: expected a number of seconds above 0, got {short_repr(batch_seconds)}")
        allow_any_graph = check_bool(allow_any_graph, "allow_any_graph")
        ort = import_onnx_package("onnxruntime")
        self.folder = os.fspath(folder)
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(f"{plain(self.folder)}: no such folder (an exported recognizer is a folder)")
        self.metadata = read_metadata(self.folder)
        self.vocab = self._read_vocab()
        self.beam_size = beam or self.metadata["beam_size"]
        self.batch_samples = max(1, int(batch_seconds * self.metadata["sample_rate"]))
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.sessions = {}
        for name in (ACOUSTIC_FILE, DECODER_FILE):
            path = os.path.join(self.folder, name)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{plain(path)}: missing from the exported recognizer")
            if not allow_any_graph:
                check_onnx_graph(path)
            session = ort.InferenceSession(path, sess_options=options,
                                           providers=list(providers or ["CPUExecutionProvider"]))
            _check_signature(session, name, path, self.metadata)
            self.sessions[name] = session
        self.frame_seconds = self.metadata["frame_rate"] / self.metadata["sample_rate"]

    @classmethod
    def from_folder(cls, folder: Union[str, os.PathLike], **options: Any) -> "OnnxRecognizer":
        """:class:`OnnxRecognizer` ``(folder, **options)``."""
        return cls(folder, **options)

    def _read_vocab(self) -> UnitVocabulary:
        path = os.path.join(self.folder, VOCAB_FILE)
        try:
            vocab = UnitVocabulary.load(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{plain(path)}: missing from the exported recognizer") from None
        if len(vocab) != self.metadata["vocab_size"]:
            raise ValueError(f"{plain(path)}: {len(vocab)} units, but recognizer.json key 'vocab_size' (the "
                             f"decoder's output size) is {self.metadata['vocab_size']}")
        return vocab

    def transcribe(self, waves: Iterable[Wave], skipped: Optional[list] = None) -> list[Transcript]:
        """One transcript per usable recording, in input order (as the PyTorch recognizer's).

        Args:
            waves: 1-D float arrays at 16 kHz, or audio file paths.
            skipped: where the recordings left out go, as :class:`~.audio.Skipped`.
        """
        sources, samples = gather_recordings(waves, skipped, lambda wave: np.asarray(wave, dtype=np.float32),
                                             self.metadata["receptive_field"])
        results: list[Optional[Transcript]] = [None] * len(samples)
        for batch in length_batches([len(s) for s in samples], self.batch_samples):
            for index, transcript in zip(batch, self._batch([samples[i] for i in batch])):
                results[index] = Transcript(transcript.text, transcript.tokens, sources[index], transcript.duration)
        return [r for r in results if r is not None]

    def _batch(self, waves: list[np.ndarray]) -> list[Transcript]:
        meta = self.metadata
        cif, cif_lengths, alpha, frame_lengths = self.acoustic(waves)
        hypotheses = self.decode(cif, cif_lengths)
        return [build_transcript(hyp, alpha[b, : frame_lengths[b]], len(waves[b]) / meta["sample_rate"], self.vocab,
                                 self.frame_seconds, meta["threshold"], meta["tail_threshold"])
                for b, hyp in enumerate(hypotheses)]

    def acoustic(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The acoustic graph on right-padded ``waves``, each output checked for shape and dtype,
        the utterances the float32 loop decides otherwise settled (:mod:`.onnx_near_ties`):
        (cif (B, N, d) up to the most firings, cif_lengths (B,), alpha (B, T), frame_lengths (B,))."""
        lengths = np.array([len(w) for w in waves], dtype=np.int64)
        batch = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
        for row, wave in enumerate(waves):
            batch[row, : len(wave)] = wave
        cif, cif_lengths, alpha, frame_lengths, hidden = self.sessions[ACOUSTIC_FILE].run(
            list(GRAPHS[ACOUSTIC_FILE][1]), {"waveforms": batch, "lengths": lengths})
        size, d_model = len(waves), self.metadata["d_model"]
        shown = plain(os.path.join(self.folder, ACOUSTIC_FILE))
        if (any(a.dtype != np.float32 for a in (cif, alpha, hidden)) or cif.ndim != 3 or cif.shape[0] != size
                or cif.shape[2] != d_model or cif_lengths.shape != (size,) or alpha.ndim != 2 or alpha.shape[0] != size
                or frame_lengths.shape != (size,) or hidden.shape != alpha.shape + (d_model,)):
            raise ValueError(f"{shown}: outputs of shapes cif {cif.shape}, cif_lengths {cif_lengths.shape}, alpha "
                             f"{alpha.shape}, frame_lengths {frame_lengths.shape}, hidden {hidden.shape} for a batch "
                             f"of {size}; expected float32 (B, N, {d_model}), (B,), (B, T), (B,), (B, T, {d_model})")
        if (cif_lengths < 1).any() or (cif_lengths > cif.shape[1]).any() or (frame_lengths > alpha.shape[1]).any():
            raise ValueError(f"{shown}: cif_lengths or frame_lengths beyond the rows the graph returned")
        cif, cif_lengths, redone = settle_near_ties(cif[:, : int(cif_lengths.max())], cif_lengths, hidden, alpha,
                                                    frame_lengths, self.metadata["threshold"],
                                                    self.metadata["tail_threshold"])
        if redone:
            logger.debug("CIF decisions of batch rows %s settled by the float32 loop", redone)
        return cif, cif_lengths, alpha, frame_lengths

    def decode(self, cif: np.ndarray, cif_lengths: np.ndarray) -> list[list[int]]:
        """Beam search over CIF vectors (B, N, d) with the decoder-step graph."""
        session, meta = self.sessions[DECODER_FILE], self.metadata
        names = list(GRAPHS[DECODER_FILE][1])

        def step(prev_token, prev_cif, vectors, keys, values):
            return session.run(names, {"prev_token": prev_token, "prev_cif": prev_cif, "cif": vectors,
                                       "past_keys": keys, "past_values": values})

        heads = meta["decoder_heads"]
        cache_shape = (meta["decoder_layers"], heads, meta["d_model"] // heads)
        return beam_search(step, cif, cif_lengths, cache_shape=cache_shape,
                           bos=meta["bos"], eos=meta["eos"], beam_size=self.beam_size, banned=meta["banned"],
                           max_steps=meta["max_steps"])
