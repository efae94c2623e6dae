"""B4: one masking-distillation training step, ours vs the reference order, by phase.

  python benchmarks/b4_train_step.py            # HuBERT Base teacher, ARMHuBERT student, 2 x 6 s, 2 threads
  python benchmarks/b4_train_step.py --quick    # smoke test

One step = span masks, teacher targets (masked and unmasked input), student forward on the
masked input, the masking-distillation loss, backward, AdamW step.

* ours: the teacher's CNN runs once (on our channels-last CPU path) and its transformer sees
  the masked and unmasked copies as one 2B batch (``Teacher.forward_masked_and_unmasked``, no
  autograd); our student; fused AdamW.
* reference order: two full teacher passes through S3PRL's own modules (CNN + transformer each,
  masked then unmasked), and the student in the reference formulation (``reference_formulation.py``: separate q/k/v,
  per-head bmm, time-major, recomputed weight norm), as the original trainer ran them.

Both students start from the same weights and the same AdamW state; the losses of the two
orders are checked equal in the same run. The analytic bound is the FLOP ratio of the two
steps (counted with torch.utils.flop_counter). Target: >= 1.3x.
"""

from __future__ import annotations

import sys
import time
from unittest import mock

import common
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from recycle_distill.builder import build_student
from recycle_distill.losses import masking_distillation_loss
from recycle_distill.profiling import count_flops
from recycle_distill.teacher import SpanMaskConfig, Teacher
from recycle_distill.teacher import teacher as teacher_module
from reference_formulation import ReferenceARMHuBERT

TARGET = 1.3
PHASES = ("mask", "teacher", "student_forward", "loss", "backward", "optimizer")


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
    """One training step of either order, timed by phase."""

    def __init__(self, name: str, teacher: Teacher, student: torch.nn.Module, lr: float = 5e-4) -> None:
        self.name, self.teacher, self.student = name, teacher, student
        # Ours uses the trainer's fused AdamW; the reference order the per-tensor default.
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-6,
                                           fused=name == "ours")
        self.hint_layers = list(range(len(student.proj_head) - 1))

    def teacher_targets(self, waves, lengths, mask):
        if self.name == "ours":
            return self.teacher.forward_masked_and_unmasked(waves, lengths, mask)
        # The original trainer: two full passes through S3PRL's own modules, CNN included.
        with mock.patch.object(teacher_module, "run_conv_blocks", s3prl_cnn):
            return self.teacher(waves, lengths, mask_indices=mask), self.teacher(waves, lengths)

    def student_projections(self, waves, lengths, mask):
        if self.name == "ours":
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
        masked, unmasked = self.teacher_targets(waves, lengths, mask)
        lap("teacher")
        projections = self.student_projections(waves, lengths, mask[:, : self._frames(waves)])
        lap("student_forward")
        total, _ = masking_distillation_loss(projections, unmasked.layer_results, masked.layer_results, mask,
                                             self.hint_layers)
        lap("loss")
        total.backward()
        lap("backward")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lap("optimizer")
        return times, float(total.detach())

    def _frames(self, waves: torch.Tensor) -> int:
        return int(self.teacher.num_frames(waves.shape[1]))


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--seconds", type=float, default=6.0, help="utterance length (default 6)")
    parser.add_argument("--batch", type=int, default=2, help="utterances per step (default 2)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats, args.warmup, args.batch = 1.0, 1, 0, 1
    common.setup(args.threads)
    info = common.print_header("B4 training step: ours vs the reference order",
                               {"teacher": "HuBERT Base (S3PRL, random)", "student": "armhubert", "batch": args.batch,
                                "seconds": args.seconds, "repeats": args.repeats, "warmup": args.warmup})
    teacher = Teacher(common.build_teacher())
    torch.manual_seed(0)
    ours_student = build_student("armhubert", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                 dropout_input=0.0).train()
    reference_student = ReferenceARMHuBERT(ours_student.config).train()
    reference_student.load_state_dict(ours_student.state_dict())
    steps = {"ours": Step("ours", teacher, ours_student), "reference": Step("reference", teacher, reference_student)}
    waves = common.waves(args.batch, args.seconds)
    lengths = torch.full((args.batch,), waves.shape[1])

    # Same loss from both orders on identical weights (before either has taken a step).
    _, loss_ours = steps["ours"](waves, lengths, seed=0)
    _, loss_reference = steps["reference"](waves, lengths, seed=0)
    agree = abs(loss_ours - loss_reference) <= 1e-5 * abs(loss_reference)
    print(f"first-step loss: ours {loss_ours:.6f}, reference order {loss_reference:.6f} -> "
          f"{'equal' if agree else 'DIFFERENT'} (rtol 1e-5)")

    flops = {}
    mask = make_masks(teacher, waves, lengths, 0)
    flops["ours"] = count_flops(lambda: steps["ours"].teacher_targets(waves, lengths, mask))
    flops["reference"] = count_flops(lambda: steps["reference"].teacher_targets(waves, lengths, mask))
    counter = FlopCounterMode(display=False)
    with counter:  # forward and backward: count_flops runs without autograd
        ours_student(waves, lengths, mask_indices=mask[:, : steps["ours"]._frames(waves)]).projections[-1].sum().backward()
    student_flops = counter.get_total_flops()
    ours_student.zero_grad(set_to_none=True)
    bound = (flops["reference"] + student_flops) / (flops["ours"] + student_flops)

    rounds: dict[str, list[dict[str, float]]] = {"ours": [], "reference": []}
    for index in range(args.warmup + args.repeats):
        for name in ("ours", "reference") if index % 2 == 0 else ("reference", "ours"):
            times, _ = steps[name](waves, lengths, seed=index + 1)
            if index >= args.warmup:
                rounds[name].append(times)

    rows, totals = [], {}
    for phase in PHASES + ("total",):
        row = [phase]
        for name in ("reference", "ours"):
            values = [sum(r.values()) if phase == "total" else r[phase] for r in rounds[name]]
            row.append(f"{common.median(values) * 1000:.0f} ms")
            if phase == "total":
                totals[name] = values
        rows.append(row)
    speedup = common.paired_ratio(totals["reference"], totals["ours"])
    print(common.table(["phase", "reference order", "ours"], rows))
    print(f"teacher GFLOP per step: reference order {flops['reference'] / 1e9:.1f}, ours {flops['ours'] / 1e9:.1f}; "
          f"student forward+backward {student_flops / 1e9:.1f}")
    print(f"step speed-up {speedup:.2f}x (analytic FLOP bound {bound:.2f}x); target >= {TARGET}x: {common.verdict(speedup, TARGET)}")
    common.write_json(args.json, {"machine": info, "speedup": speedup, "bound": bound, "loss_agree": agree,
                                  "phases": {n: [dict(r) for r in rounds[n]] for n in rounds}})
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
