"""Convert a released checkpoint into our compact safetensors student.

  recycle-distill convert ARMHuBERT-960h.ckpt -g armhubert-960.yaml -o armhubert-960h.safetensors

An alias of the export command's safetensors format (same file, fp32):
  recycle-distill export ARMHuBERT-960h.ckpt -g armhubert-960.yaml --format safetensors -o armhubert-960h.safetensors
(``export`` also takes presets and published releases, ``--dtype bf16``, and the hf/onnx formats.)

The output holds the student weights only (no teacher, no optimizer state) with the family,
the architecture config and a format version as metadata, so it loads without -g:
  torch.hub.load(REPO, 'armhubert', source='local', ckpt='armhubert-960h.safetensors')
"""

from __future__ import annotations

import argparse
import os
import sys

from recycle_distill.students.build import list_presets, resolve_config
from recycle_distill.checkpoint import CheckpointError, load_student, read_compact, save_compact
from recycle_distill.checkpoint.compact import is_safetensors
from recycle_distill.checkpoint.safe_load import check_readable_file
from recycle_distill.util.atomic import check_output_file
from recycle_distill.util.messages import plain, short_repr
from recycle_distill.students import FAMILIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="released Lightning .ckpt, a state dict .pt, or a compact file")
    parser.add_argument("-g", "--model-config", default=None,
                        help=f"architecture YAML (the reference -g file) or a preset ({', '.join(list_presets())})")
    parser.add_argument("-o", "--output", required=True, help="output .safetensors path")
    parser.add_argument("--family", choices=sorted(FAMILIES), default=None,
                        help="student family (default: inferred from the config; starhubert must be named)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file (a regular file only)")


def run(args: argparse.Namespace) -> int:
    check_readable_file(args.checkpoint)
    # A device, FIFO, socket or folder at the output is refused whatever --force says.
    if check_output_file(args.output) and not args.force:
        print(f"error: {plain(args.output)} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    compact = is_safetensors(args.checkpoint)
    if args.family is None and args.model_config is None and not compact:
        print("error: give the architecture with -g CONFIG.yaml (or --family with a checkpoint that matches a preset)",
              file=sys.stderr)
        return 1
    family = args.family
    if family is None and args.model_config is not None:
        _, family = resolve_config(args.model_config)
    elif family is None:
        _, family, _ = read_compact(args.checkpoint)  # refuses a safetensors file without our metadata
        if family not in FAMILIES:
            raise CheckpointError(f"{args.checkpoint}: holds an unknown student family {short_repr(family)}")
    model = load_student(args.checkpoint, family, args.model_config)
    save_compact(args.output, model.state_dict(), family, model.config.to_dict())
    params = sum(p.numel() for p in model.parameters())
    size_mb = os.path.getsize(args.output) / 2**20
    print(f"wrote {args.output}: {family}, {params:,} parameters, {size_mb:.1f} MiB")
    return 0
