"""Transcribe recordings with a trained ``cif_asr`` experiment, with a time span per token.

  recycle-distill transcribe -e result/downstream/my_cif audio/ talk.flac -o transcripts
  recycle-distill transcribe --onnx exported_recognizer/ list.txt -o transcripts

Inputs are audio files, folders (searched recursively for .wav, .flac, .ogg, .mp3) and list
files (.txt, .lst, .list: one path per line). Writes ``<output>.txt`` (``source<TAB>text`` per
recording) and ``<output>.jsonl`` (one JSON object per recording: source, duration, text and
tokens with start/end seconds), both atomically and never over an input. Unreadable, empty,
too short or non-finite recordings are skipped and counted. The summary gives the hours of
audio, the wall time and the real-time factor (wall time / audio time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path

from recycle_distill.recognizer.audio import DEFAULT_BATCH_SECONDS, AudioError, Skipped, collect_audio, read_audio
from recycle_distill.util.atomic import atomic_write, check_output_file
from recycle_distill.util.messages import plain

SUFFIXES = (".txt", ".jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-e", "--experiment",
                        help="cif_asr expdir (its dev-best.ckpt, else its latest states-*.ckpt) or one checkpoint")
    source.add_argument("--onnx", metavar="DIR", help="an exported ONNX recognizer folder instead of an experiment")
    parser.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or list files")
    parser.add_argument("-o", "--output", required=True,
                        help="output prefix: writes OUTPUT.txt and OUTPUT.jsonl")
    parser.add_argument("--beam", type=int, default=None, help="beam size (default: the experiment's decode.beam_size)")
    parser.add_argument("--batch-seconds", type=float, default=DEFAULT_BATCH_SECONDS,
                        help="padded audio per batch, in seconds (default %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--upstream_dtype", default=None,
                        help="precision of a recycle-distill student upstream: fp32, bf16 or int8")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true", help="replace existing output files (regular files only)")


def _outputs(prefix: str, inputs: list[Path], force: bool) -> list[Path]:
    """OUTPUT.txt and OUTPUT.jsonl, refused when one is an input, or exists without --force."""
    outputs = [Path(prefix + suffix) for suffix in SUFFIXES]
    read = {path.resolve() for path in inputs}
    for output in outputs:
        if output.resolve() in read:
            raise ValueError(f"{plain(output)}: is one of the inputs; choose another --output")
        if check_output_file(output) and not force:
            raise ValueError(f"{plain(output)} exists; pass --force to replace it")
    return outputs


def _read_all(paths: list[Path], skipped: list[Skipped]) -> tuple[list, list[str]]:
    waves, sources = [], []
    for path in paths:
        try:
            waves.append(read_audio(path))
            sources.append(str(path))
        except AudioError as error:
            skipped.append(Skipped(str(path), str(error)))
    return waves, sources


def _recognizer(args: argparse.Namespace):
    """The PyTorch recognizer of ``-e``, or the ONNX runner of ``--onnx``: both ``transcribe(waves)``."""
    if args.onnx:
        if args.upstream_dtype:
            raise ValueError("--upstream_dtype applies to an experiment (-e), not to --onnx")
        # Imported here: the ONNX runner needs onnxruntime, which a PyTorch-only install lacks.
        from recycle_distill.recognizer.onnx_runner import OnnxRecognizer

        return OnnxRecognizer.from_folder(args.onnx, beam=args.beam, batch_seconds=args.batch_seconds)
    from recycle_distill.recognizer.torch_recognizer import Recognizer

    return Recognizer.from_experiment(args.experiment, device=args.device, upstream_dtype=args.upstream_dtype,
                                      beam=args.beam, batch_seconds=args.batch_seconds, progress=not args.no_progress)


def _write(outputs: list[Path], transcripts: list) -> None:
    text_path, jsonl_path = outputs
    lines = [f"{t.source}\t{t.text}\n" for t in transcripts]
    records = [json.dumps(t.to_json(), ensure_ascii=False) + "\n" for t in transcripts]
    for path, content in ((text_path, lines), (jsonl_path, records)):
        def write(temp: str, content=content) -> None:
            with open(temp, "w", encoding="utf-8") as handle:
                handle.writelines(content)

        atomic_write(path, write)


def run(args: argparse.Namespace) -> int:
    if args.beam is not None and args.beam < 1:
        raise ValueError(f"--beam must be >= 1, got {args.beam}")
    if not args.batch_seconds > 0:
        raise ValueError(f"--batch-seconds must be > 0, got {args.batch_seconds}")
    paths = collect_audio(args.inputs)
    outputs = _outputs(args.output, [Path(item) for item in args.inputs] + paths, args.force)
    skipped: list[Skipped] = []
    waves, sources = _read_all(paths, skipped)
    started = time.perf_counter()
    recognizer = _recognizer(args)
    loaded = time.perf_counter()
    transcripts = recognizer.transcribe(waves) if waves else []
    wall = time.perf_counter() - loaded
    if len(transcripts) != len(waves):
        raise RuntimeError(f"the recognizer returned {len(transcripts)} transcripts for {len(waves)} recordings")
    transcripts = [dataclasses.replace(t, source=source) for t, source in zip(transcripts, sources)]
    _write(outputs, transcripts)
    for item in skipped:
        print(f"skipped {plain(item.source)}: {item.reason}", file=sys.stderr)
    audio_seconds = sum(t.duration for t in transcripts)
    reasons = Counter(item.reason.split(" (")[0] for item in skipped)
    factor = f"{wall / audio_seconds:.3f}" if audio_seconds else "n/a"
    print(f"transcribed {len(transcripts)} recordings ({audio_seconds / 3600:.4f} h of audio) in {wall:.1f} s: "
          f"real-time factor {factor} (loading took {loaded - started:.1f} s more); skipped {len(skipped)}"
          + (f" ({', '.join(f'{reason} {count}' for reason, count in sorted(reasons.items()))})" if skipped else ""))
    print(f"wrote {outputs[0]} and {outputs[1]}")
    return 0
