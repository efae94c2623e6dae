"""B4: one masking-distillation training step, ours (fp32 and bf16) vs the reference order, by phase.

  python benchmarks/b4_train_step.py            # HuBERT Base teacher, ARMHuBERT student, 2 x 6 s, 2 threads
  python benchmarks/b4_train_step.py --quick    # smoke test
  python benchmarks/b4_train_step.py --map-free --seconds 30   # also the map-free reuse layer, 2 x 30 s

One step = span masks, teacher targets (masked and unmasked input), student forward on the
masked input, the masking-distillation loss, backward, AdamW step.

* ours (fp32): the teacher's CNN runs once (on our channels-last CPU path) and its transformer
  sees the masked and unmasked copies as one 2B batch (``Teacher.forward_masked_and_unmasked``,
  no autograd); our student; fused AdamW.
* ours (bf16): the same step as the trainer runs it with ``train.precision: bf16``: the teacher
  cast to bf16 once, the student's forward under bf16 autocast with float32 master weights and
  AdamW state, the loss (and the backward's cast back) in float32.
* reference order (fp32): two full teacher passes through S3PRL's own modules (CNN +
  transformer each, masked then unmasked), and the student in the reference formulation
  (``reference_formulation.py``: separate q/k/v, per-head bmm, time-major, recomputed weight
  norm), as the original trainer ran them.

All three students start from the same weights and the same AdamW state. Checked in the same
run: the first-step losses of the two fp32 orders agree within 1e-5, and bf16's is within 1e-2
(relative) of fp32's. Analytic bounds: ours fp32 vs the reference order is the FLOP ratio of the
two steps (torch.utils.flop_counter); bf16 can add at most the bf16/fp32 matmul peak ratio,
measured here in the same rounds (2048^3 ``torch.mm``: MKL's sgemm for fp32, which the fp32
steps' Linears use; oneDNN for bf16). oneDNN's fp32 kernels, ~2x MKL's sgemm on AMD CPUs, are
sampled too for context. Each order's teacher and student phases are also printed as achieved
GFLOP/s against the matching peak. Targets: ours fp32 >= 1.3x and ours bf16 >= 2.0x the
reference order.

``--map-free`` adds a fourth order, ours (fp32) with the map-free reuse layer
(``build_student(..., blocks="map_free")``: the reuse layers recompute the full layers' maps
block by block from their queries and keys, forward and backward, instead of storing them),
from the same weights; its first-step loss must equal ours fp32's within 1e-5 (relative), and
the student's forward + backward peak memory (torch profiler allocator events) is printed for
both. Run it at 2 x 6 s and 2 x 30 s (``--seconds 30``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from unittest import mock

import common
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from recycle_distill.students.build import build_student
from recycle_distill.training.losses import masking_distillation_loss
from recycle_distill.lab.profiling import count_flops, peak_memory
from recycle_distill.training.teacher import SpanMaskConfig, Teacher
from recycle_distill.training.teacher import teacher as teacher_module
from reference_formulation import ReferenceARMHuBERT

TARGET = 1.3
TARGET_BF16 = 2.0
BF16_LOSS_RTOL = 1e-2
PHASES = ("mask", "teacher", "student_forward", "loss", "backward", "optimizer")
ORDERS = ("reference", "ours", "ours_bf16")
LABELS = {"reference": "reference order (fp32)", "ours": "ours (fp32)", "ours_bf16": "ours (bf16)",
          "ours_map_free": "ours (fp32, map-free)"}
PEAK_SIZE = 2048


def s3prl_cnn(conv_layers: torch.nn.ModuleList, waves: torch.Tensor) -> torch.Tensor:
    """S3PRL's ConvFeatureExtractionModel.forward: the blocks as built, channels-first."""
    x = waves.unsqueeze(1)
    for block in conv_layers:
        x = block(x)
    return x


def make_masks(teacher: Teacher, waves: torch.Tensor, lengths: torch.Tensor, seed: int) -> torch.Tensor:
    padding = teacher.frame_padding_mask(lengths, waves.shape[1])
    config = SpanMaskConfig(mask_prob=0.8, mask_length=10)
    rows = [teacher.compute_mask_indices(padding[i : i + 1], config=config, generator=np.random.RandomState(seed + i))
            for i in range(waves.shape[0])]
    return torch.cat(rows)


class Step:
    """One training step of one order, timed by phase.

    Args:
        name: ``"ours"``, ``"ours_bf16"`` or ``"reference"``.
        teacher: the teacher this order uses (a bf16-cast one for ``ours_bf16``).
        student: this order's student (float32 weights).
    """

    def __init__(self, name: str, teacher: Teacher, student: torch.nn.Module, lr: float = 5e-4) -> None:
        self.name, self.teacher, self.student = name, teacher, student
        self.ours = name != "reference"
        # Ours uses the trainer's fused AdamW; the reference order the per-tensor default.
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-6,
                                           fused=self.ours)
        self.hint_layers = list(range(len(student.proj_head) - 1))

    def autocast(self):
        """The trainer's bf16 autocast around both models (the bf16 teacher turns it off inside)."""
        if self.name == "ours_bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def teacher_targets(self, waves, lengths, mask):
        if self.ours:
            return self.teacher.forward_masked_and_unmasked(waves, lengths, mask)
        # The original trainer: two full passes through S3PRL's own modules, CNN included.
        with mock.patch.object(teacher_module, "run_conv_blocks", s3prl_cnn):
            return self.teacher(waves, lengths, mask_indices=mask), self.teacher(waves, lengths)

    def student_projections(self, waves, lengths, mask):
        if self.ours:
            return self.student(waves, lengths, mask_indices=mask).projections
        handle = self.student.encoder.register_forward_pre_hook(
            lambda module, args: (torch.where(mask.unsqueeze(-1), self.student.mask_emb, args[0]), args[1]))
        try:
            return self.student(waves, None)[0]
        finally:
            handle.remove()

    def __call__(self, waves, lengths, seed) -> tuple[dict[str, float], float]:
        times: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            times[phase] = now - clock
            clock = now

        mask = make_masks(self.teacher, waves, lengths, seed)
        lap("mask")
        with self.autocast():
            masked, unmasked = self.teacher_targets(waves, lengths, mask)
        lap("teacher")
        with self.autocast():
            projections = self.student_projections(waves, lengths, mask[:, : self.frames(waves)])
        lap("student_forward")
        # Outside autocast: the loss upcasts bf16 predictions and targets to float32.
        total, _ = masking_distillation_loss(projections, unmasked.layer_results, masked.layer_results, mask,
                                             self.hint_layers)
        lap("loss")
        total.backward()
        lap("backward")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lap("optimizer")
        return times, float(total.detach())

    def frames(self, waves: torch.Tensor) -> int:
        return int(self.teacher.num_frames(waves.shape[1]))


def step_flops(steps: dict[str, Step], waves: torch.Tensor, lengths: torch.Tensor) -> tuple[dict[str, float], float]:
    """Teacher FLOPs per step of each fp32 order, and the student's forward + backward FLOPs."""
    mask = make_masks(steps["ours"].teacher, waves, lengths, 0)
    teacher = {name: count_flops(lambda: steps[name].teacher_targets(waves, lengths, mask))
               for name in ("ours", "reference")}
    student = steps["ours"].student
    counter = FlopCounterMode(display=False)
    with counter:  # forward and backward: count_flops runs without autograd
        student(waves, lengths, mask_indices=mask[:, : steps["ours"].frames(waves)]).projections[-1].sum().backward()
    student.zero_grad(set_to_none=True)
    return teacher, counter.get_total_flops()


def student_peak_memory(student: torch.nn.Module, step: Step, waves: torch.Tensor,
                        lengths: torch.Tensor) -> int | None:
    """Peak bytes of one student forward (on the step's masked input) + backward."""
    mask = make_masks(step.teacher, waves, lengths, 0)[:, : step.frames(waves)]

    def forward_and_backward() -> None:
        with torch.inference_mode(False), torch.enable_grad():  # peak_memory turns autograd off
            student(waves, lengths, mask_indices=mask).projections[-1].sum().backward()

    peak = peak_memory(forward_and_backward).peak_bytes
    student.zero_grad(set_to_none=True)
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--seconds", type=float, default=6.0, help="utterance length (default 6)")
    parser.add_argument("--batch", type=int, default=2, help="utterances per step (default 2)")
    parser.add_argument("--map-free", action="store_true", help="also time ours with the map-free reuse layer")
    args = parser.parse_args(argv)
    orders = ORDERS + (("ours_map_free",) if args.map_free else ())
    if args.quick:
        args.seconds, args.repeats, args.warmup, args.batch = 1.0, 1, 0, 1
    common.setup(args.threads)
    info = common.print_header("B4 training step: ours (fp32, bf16) vs the reference order (fp32)",
                               {"teacher": "HuBERT Base (S3PRL, random)", "student": "armhubert", "batch": args.batch,
                                "seconds": args.seconds, "repeats": args.repeats, "warmup": args.warmup})
    teacher = Teacher(common.build_teacher())
    teacher_bf16 = Teacher(common.build_teacher()).to(torch.bfloat16)  # the same seed: the same weights, cast
    torch.manual_seed(0)
    dropout_free = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0)
    students = {"ours": build_student("armhubert", **dropout_free).train()}
    students["ours_bf16"] = build_student("armhubert", **dropout_free).train()
    students["reference"] = ReferenceARMHuBERT(students["ours"].config).train()
    if args.map_free:
        students["ours_map_free"] = build_student("armhubert", blocks="map_free", **dropout_free).train()
    for name in orders:
        if name != "ours":
            students[name].load_state_dict(students["ours"].state_dict())
    steps = {name: Step(name, teacher_bf16 if name == "ours_bf16" else teacher, students[name]) for name in orders}
    waves = common.waves(args.batch, args.seconds)
    lengths = torch.full((args.batch,), waves.shape[1])

    # First-step losses on identical weights (before any order has taken a step).
    first = {name: steps[name](waves, lengths, seed=0)[1] for name in orders}
    agree = abs(first["ours"] - first["reference"]) <= 1e-5 * abs(first["reference"])
    bf16_rel = abs(first["ours_bf16"] - first["ours"]) / abs(first["ours"])
    bf16_close = bf16_rel <= BF16_LOSS_RTOL
    print(f"first-step loss: ours fp32 {first['ours']:.6f}, reference order {first['reference']:.6f} -> "
          f"{'equal' if agree else 'DIFFERENT'} (rtol 1e-5)")
    print(f"first-step loss: ours bf16 {first['ours_bf16']:.6f} vs fp32 {first['ours']:.6f}: relative difference "
          f"{bf16_rel:.1e} -> {'within' if bf16_close else 'OUTSIDE'} {BF16_LOSS_RTOL:g}")

    student_memory: dict[str, int | None] = {}
    if args.map_free:
        map_free_agree = abs(first["ours_map_free"] - first["ours"]) <= 1e-5 * abs(first["ours"])
        print(f"first-step loss: ours map-free {first['ours_map_free']:.6f} vs stored maps {first['ours']:.6f} -> "
              f"{'equal' if map_free_agree else 'DIFFERENT'} (rtol 1e-5)")
        agree = agree and map_free_agree
        student_memory = {name: student_peak_memory(students[name], steps[name], waves, lengths)
                          for name in ("ours", "ours_map_free")}
        print("student forward + backward peak memory: " + ", ".join(
            f"{LABELS[name]} {'n/a' if peak is None else f'{peak / 2**20:.0f} MiB'}"
            for name, peak in student_memory.items()))

    teacher_flops, student_flops = step_flops(steps, waves, lengths)
    flop_bound = (teacher_flops["reference"] + student_flops) / (teacher_flops["ours"] + student_flops)

    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in orders}
    # fp32 and bf16 as torch.mm runs them (MKL's sgemm, oneDNN), the kernels behind the steps'
    # Linears; fp32-onednn for context: oneDNN's fp32 kernels, ~2x MKL's sgemm on AMD CPUs.
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": [], "fp32-onednn": []}
    for index in range(args.warmup + args.repeats):
        order = orders if index % 2 == 0 else orders[::-1]
        for name in order:
            times, _ = steps[name](waves, lengths, seed=index + 1)
            if index >= args.warmup:
                rounds[name].append(times)
        for dtype in peaks:  # the matmul peaks, sampled in the same rounds as the steps
            peaks[dtype].append(common.matmul_gflops(PEAK_SIZE, dtype=dtype))
    for values in peaks.values():
        del values[: args.warmup]
    peak = {dtype: common.median(values) for dtype, values in peaks.items()}
    peak_ratio = peak["bf16"] / peak["fp32"]

    rows, totals = [], {}
    for phase in PHASES + ("total",):
        row = [phase]
        for name in orders:
            values = [sum(r.values()) if phase == "total" else r[phase] for r in rounds[name]]
            row.append(f"{common.median(values) * 1000:.0f} ms")
            if phase == "total":
                totals[name] = values
        rows.append(row)
    speedup = common.paired_ratio(totals["reference"], totals["ours"])
    speedup_bf16 = common.paired_ratio(totals["reference"], totals["ours_bf16"])
    bf16_vs_fp32 = common.paired_ratio(totals["ours"], totals["ours_bf16"])
    print(common.table(["phase"] + [LABELS[name] for name in orders], rows))
    print(f"teacher GFLOP per step: reference order {teacher_flops['reference'] / 1e9:.1f}, "
          f"ours {teacher_flops['ours'] / 1e9:.1f}; student forward+backward {student_flops / 1e9:.1f}")
    print(f"matmul peak ({PEAK_SIZE}^3, median of the rounds): fp32 {peak['fp32']:.0f} GFLOP/s, "
          f"bf16 {peak['bf16']:.0f} GFLOP/s ({peak_ratio:.2f}x); for context fp32 through oneDNN "
          f"{peak['fp32-onednn']:.0f} GFLOP/s (bf16 {peak['bf16'] / peak['fp32-onednn']:.2f}x that)")
    for name in orders:  # achieved rates per phase group, against the matching matmul peak
        dtype = "bf16" if name == "ours_bf16" else "fp32"
        teacher_s = common.median([r["teacher"] for r in rounds[name]])
        student_s = common.median([r["student_forward"] + r["backward"] for r in rounds[name]])
        teacher_gflop = teacher_flops["reference" if name == "reference" else "ours"] / 1e9
        rates = [teacher_gflop / teacher_s, student_flops / 1e9 / student_s]
        print(f"{LABELS[name]}: teacher {rates[0]:.0f} GFLOP/s ({rates[0] / peak[dtype]:.0%} of the {dtype} peak), "
              f"student forward+backward {rates[1]:.0f} GFLOP/s ({rates[1] / peak[dtype]:.0%})")
    print(f"ours fp32 vs reference order: {speedup:.2f}x (analytic FLOP bound {flop_bound:.2f}x); "
          f"target >= {TARGET}x: {common.verdict(speedup, TARGET)}")
    if args.map_free:
        print(f"ours map-free vs ours stored maps (fp32): "
              f"{common.paired_ratio(totals['ours'], totals['ours_map_free']):.2f}x")
    print(f"ours bf16 vs ours fp32: {bf16_vs_fp32:.2f}x (bound: the bf16/fp32 peak ratio {peak_ratio:.2f}x)")
    print(f"ours bf16 vs reference order (fp32): {speedup_bf16:.2f}x (bound {flop_bound * peak_ratio:.2f}x = "
          f"FLOP ratio x peak ratio); target >= {TARGET_BF16}x: {common.verdict(speedup_bf16, TARGET_BF16)}")
    common.write_json(args.json, {
        "student_peak_memory_bytes": student_memory,
        "machine": info, "speedup": speedup, "bound": flop_bound, "loss_agree": agree,
        "speedup_bf16": speedup_bf16, "bf16_vs_fp32": bf16_vs_fp32, "bound_bf16": flop_bound * peak_ratio,
        "first_step_loss": first, "bf16_loss_relative_difference": bf16_rel,
        "matmul_peak_gflops": peak, "peak_samples": peaks,
        "teacher_flops": teacher_flops, "student_flops": student_flops,
        "phases": {name: [dict(r) for r in rounds[name]] for name in rounds},
    })
    return 0 if agree and bf16_close else 1


if __name__ == "__main__":
    sys.exit(main())
