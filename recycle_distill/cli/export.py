"""Export a student (checkpoint, preset or published release) as safetensors, a Hugging Face folder or ONNX.

  recycle-distill export ARMHuBERT-960h.ckpt -g armhubert-960.yaml --format hf -o armhubert-hf/
  recycle-distill export maskhubert_960h --format hf -o maskhubert-hf/      # published release
  recycle-distill export starhubert --format hf -o star-random/ --seed 0   # random preset
  recycle-distill export run/student.safetensors --format safetensors -o s.safetensors
  recycle-distill export run/student.safetensors --format safetensors --dtype bf16 -o s-bf16.safetensors
  recycle-distill export armhubert_960h --format onnx -o armhubert.onnx
  recycle-distill export armhubert_960h --format onnx --dtype int8 -o armhubert-int8.onnx
  recycle-distill export result/downstream/my_cif --format onnx -o my_cif-onnx/   # a cif_asr experiment

--format safetensors writes our compact file (what 'convert' writes; --dtype bf16 stores bf16
weights at half the size, loaded back as float32); --format hf writes a folder that
transformers.AutoModel.from_pretrained loads offline (MaskHuBERT / STaRHuBERT as a plain
HubertModel; ARMHuBERT / FitHuBERT with trust_remote_code=True), with a model card;
--format onnx writes one .onnx file (inputs waveforms (B, S) float32 and lengths (B,) int64;
outputs hidden_states (N, B, T, D), last_hidden_state, padding_mask) that the <family>_onnx
hub entries run in ONNX Runtime (needs: pip install "recycle-distill[onnx]"); --dtype int8
quantizes its MatMul/Gemm weights (ONNX Runtime dynamic quantization). A cif_asr experiment
(an S3PRL expdir holding vocab.json, or one of its .ckpt files) exports only as --format onnx:
a folder of two graphs with the vocabulary that 'recycle-distill transcribe --onnx DIR' runs
without torch (recycle_distill/recognizer/onnx_export.py; docs/cif_asr.md, "Deploy").

Every format is written beside its target and renamed into place when complete, so a failure
(a full disk) leaves the previous output as it was. --force replaces a regular file (safetensors,
onnx) or an earlier hf export holding only the files an export writes; a device, a FIFO or a
socket, a folder where a file goes (and a file where a folder goes), and a folder of anything
else are refused whatever --force says.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from recycle_distill.students.build import build_student, list_presets, resolve_config
from recycle_distill.checkpoint import CheckpointError, load_student, read_compact, read_provenance, save_compact
from recycle_distill.checkpoint.compact import is_safetensors
from recycle_distill.checkpoint.fetch import released_checkpoint
from recycle_distill import families
from recycle_distill.students import FAMILIES
from recycle_distill.util.atomic import check_output_file
from recycle_distill.util.messages import plain

# --dtype values each format supports (the first is the default).
DTYPES = {"safetensors": ("fp32", "bf16"), "hf": ("fp32",), "onnx": ("fp32", "int8")}
FORMATS = tuple(DTYPES)
# Why a precision is missing from a format, where the reason is not obvious.
WHY_NOT = {("onnx", "bf16"): " (ONNX Runtime's CPU provider has no bfloat16 MatMul kernel)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a checkpoint (.ckpt, .pt, .safetensors, or an export folder), a preset "
                                       f"({', '.join(list_presets())}) or a published release "
                                       f"({', '.join(families.RELEASES)}); or a cif_asr experiment (--format onnx)")
    parser.add_argument("--format", dest="format", default="safetensors",
                        help=f"output format: {', '.join(FORMATS)} (default safetensors)")
    parser.add_argument("--dtype", default="fp32",
                        help="precision of the output: " + "; ".join(f"{name}: {'|'.join(dtypes)}"
                                                                      for name, dtypes in DTYPES.items())
                        + " (default fp32)")
    parser.add_argument("-o", "--output", required=True, help="output file (safetensors, onnx) or folder (hf; an experiment's onnx)")
    parser.add_argument("-g", "--model-config", default=None, help="architecture YAML (the reference -g file) or preset")
    parser.add_argument("--family", choices=sorted(FAMILIES), default=None,
                        help="student family (default: from the config, the file or the release)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    parser.add_argument("--teacher", default=None, help="teacher named in the model card")
    parser.add_argument("--data", default=None, help="training data named in the model card")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing output file, or an earlier hf export (nothing else)")


def load_source(args: argparse.Namespace) -> tuple[torch.nn.Module, str, str | None, str | None]:
    """(model, family, release entry or None, source file or None) for the command's source."""
    source = args.source
    if os.path.exists(source):
        family = args.family
        if family is None and args.model_config is not None:
            _, family = resolve_config(args.model_config)
        elif family is None and is_safetensors(source):
            _, family, _ = read_compact(source)
        elif family is None and not os.path.isdir(source):
            raise CheckpointError(f"{source}: give the architecture with -g CONFIG.yaml or the family with --family")
        model = load_student(source, family, args.model_config)
        family = family or _family_of(model)
        return model, family, None, source if os.path.isfile(source) else None
    if source in families.RELEASES:
        entry = families.RELEASES[source]
        path = released_checkpoint(source)
        return load_student(path, entry.family, args.model_config or entry.preset), entry.family, source, path
    if source in list_presets():
        torch.manual_seed(args.seed)
        _, family = resolve_config(args.model_config or source, args.family)
        return build_student(args.model_config or source, family), family, None, None
    raise CheckpointError(f"{source}: no such file, preset ({', '.join(list_presets())}) or release "
                          f"({', '.join(families.RELEASES)})")


def _family_of(model: torch.nn.Module) -> str:
    return str(getattr(model, "family"))


def output_exists(fmt: str, output: str) -> bool:
    """True when ``output`` holds an earlier output ``--force`` may replace; an OutputError (one
    line naming the path and what is there) for anything ``--force`` must not replace."""
    if fmt == "hf":
        from recycle_distill.hf_export.export import check_hf_output

        return check_hf_output(output)
    return check_output_file(output)


def option_error(fmt: str, dtype: str) -> str | None:
    """The one-line error for an unknown ``--format`` or a ``--dtype`` it does not support, else None."""
    if fmt not in DTYPES:
        return f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}"
    if dtype not in DTYPES[fmt]:
        return (f"--dtype {dtype} is not supported for --format {fmt}{WHY_NOT.get((fmt, dtype), '')}; "
                f"supported: {', '.join(DTYPES[fmt])}")
    return None


def is_experiment(source: str) -> bool:
    """A ``cif_asr`` experiment: an S3PRL expdir holding ``vocab.json``, or a ``.ckpt`` beside one."""
    path = os.path.abspath(source)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    return (os.path.isdir(path) or path.endswith(".ckpt")) and os.path.isfile(os.path.join(folder, "vocab.json"))


def export_experiment(args: argparse.Namespace) -> int:
    """A trained recognizer as a folder of ONNX graphs (``recycle_distill.recognizer.onnx_export``)."""
    from recycle_distill.checkpoint.finite import check_finite_on_export
    from recycle_distill.recognizer.experiment import load_experiment
    from recycle_distill.recognizer.onnx_export import check_recognizer_output, export_experiment_onnx

    if args.format != "onnx":
        print(f"error: {plain(args.source)} is a cif_asr experiment; it exports as --format onnx (a folder of ONNX "
              f"graphs that 'recycle-distill transcribe --onnx DIR' runs)", file=sys.stderr)
        return 1
    if check_recognizer_output(args.output) and not args.force:
        print(f"error: {plain(args.output)} holds an exported recognizer; pass --force to replace it", file=sys.stderr)
        return 1
    experiment = load_experiment(args.source)
    for part in (experiment.upstream, experiment.model):
        check_finite_on_export(part.state_dict(), args.output)
    info = export_experiment_onnx(experiment, args.output, dtype=args.dtype)
    meta = info["metadata"]
    print(f"wrote {plain(os.path.join(args.output, ''))}: the recognizer on {meta['upstream']} as ONNX ({args.dtype}, "
          f"opset {info['opset']}), {meta['vocab_size']} units, {info['bytes'] / 2**20:.1f} MiB; run it with "
          f"'recycle-distill transcribe --onnx {plain(args.output)}' (ONNX Runtime and NumPy only)")
    return 0


def run(args: argparse.Namespace) -> int:
    problem = option_error(args.format, args.dtype)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    if args.format == "onnx":
        from recycle_distill.inference.onnx_export import require_onnx

        try:  # before loading anything: a missing extra is one line with the install hint
            require_onnx(args.dtype)
        except ImportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    if is_experiment(args.source):
        return export_experiment(args)
    if output_exists(args.format, args.output) and not args.force:
        print(f"error: {plain(args.output)} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    model, family, release, source_file = load_source(args)
    # What a student trained here records (teacher, data, objective, steps, precision) goes on.
    on_disk = args.source if os.path.isdir(args.source) else source_file  # an export folder, or a file
    provenance = read_provenance(on_disk) if on_disk and (os.path.isdir(on_disk) or is_safetensors(on_disk)) else None
    params = sum(p.numel() for p in model.parameters())
    if args.format == "safetensors":
        state = model.state_dict()
        if args.dtype == "bf16":
            state = {key: value.to(torch.bfloat16) if value.is_floating_point() else value
                     for key, value in state.items()}
        save_compact(args.output, state, family, model.config.to_dict(), provenance=provenance)
        print(f"wrote {args.output}: {family}, {params:,} parameters ({args.dtype}), "
              f"{os.path.getsize(args.output) / 2**20:.1f} MiB")
        return 0
    if args.format == "onnx":
        from recycle_distill.checkpoint.finite import check_finite_on_export
        from recycle_distill.inference.onnx_export import export_onnx

        check_finite_on_export(model.state_dict(), args.output)  # (safetensors and hf check in their writers)
        info = export_onnx(model, args.output, family=family, dtype=args.dtype, provenance=provenance)
        print(f"wrote {args.output}: {family} as ONNX ({args.dtype}, opset {info['opset']}), {params:,} parameters, "
              f"{info['bytes'] / 2**20:.1f} MiB; run it with the {family}_onnx hub entry or any ONNX Runtime")
        return 0
    from recycle_distill.hf_export import export_hf
    from recycle_distill.hf_export.model_card import identify_release

    release = release or identify_release(source_file=source_file)
    info = export_hf(model, family, args.output, release=release, teacher=args.teacher, data=args.data,
                     provenance=provenance)
    how = "AutoModel.from_pretrained(DIR)" if info["kind"] == "hubert" else \
        "AutoModel.from_pretrained(DIR, trust_remote_code=True)"
    print(f"wrote {plain(os.path.join(args.output, ''))}: {family} as a Hugging Face folder ({info['kind']}), "
          f"{params:,} parameters"
          f"{', published release ' + release if release else ''}; load with {how}")
    return 0
