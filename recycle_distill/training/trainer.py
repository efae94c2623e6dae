"""The distillation loop: one process or many (torchrun), exact resume, TensorBoard, export.

Order of one optimizer step: ``accumulate_grad_batches`` micro-batches (forward under
autocast, backward, DDP gradient sync only on the last), then unscale, clip, step, schedule.
A step whose loss or gradient is NaN/inf on any rank is skipped on every rank (no optimizer
or scheduler update, a warning); ``train.max_bad_steps`` such steps in a row stop the run with
:class:`TrainingDiverged`. The fp16 grad scaler's own overflow skips are not counted.
Those guards live in :mod:`recycle_distill.training.step_guards`.
Checkpoints are taken only between optimizer steps and hold everything random (RNG states,
sampler position), so a run killed at any point and resumed from its last checkpoint
repeats the lost work exactly. Ctrl-C stops at the next step boundary with a checkpoint
(:mod:`recycle_distill.training.interrupt`); saving, resuming and the export (with the run's
provenance) are :class:`~recycle_distill.training.run_checkpoints.RunCheckpoints`'.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from recycle_distill.checkpoint import load_student as load_student_checkpoint
from recycle_distill.training.data import AudioDataset, make_dataloader
from recycle_distill.students import FAMILIES, StudentModel
from recycle_distill.students.build import block_table
from recycle_distill.util.sample_rate import SAMPLE_RATE
from recycle_distill.training.teacher import Teacher, load_teacher
from recycle_distill.training.teacher.upstream_teacher import (
    prepare_teacher,
    teacher_layer_mapping,
    upstream_hub_kwargs,
)
from recycle_distill.training.config import TrainConfig
from recycle_distill.training.manifests import build_manifests
from recycle_distill.training.distributed import DistributedContext
from recycle_distill.training.interrupt import StopRequest, ignore_sigint
from recycle_distill.training.loss_plot import VALIDATION_FILE
from recycle_distill.training.provenance import run_provenance
from recycle_distill.training.objectives import build_objective
from recycle_distill.training.optim import build_optimizer
from recycle_distill.training.step_guards import NoUsableAudio, StepGuards, TrainingDiverged
from recycle_distill.training.run_checkpoints import RunCheckpoints

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainingDiverged", "NoUsableAudio"]


# StepGuards: the non-finite step check and skip, probe_data (--check), the empty-epoch refusal.
# RunCheckpoints: save, resume, export.
class Trainer(StepGuards, RunCheckpoints):
    """Distil ``config.student`` from ``config.teacher`` on ``config.data``."""

    def __init__(self, config: TrainConfig, check_only: bool = False) -> None:
        """Load everything a run needs; ``check_only`` (``--check``) writes nothing to the output folder."""
        self.config = config
        self.check_only = check_only
        train = config.train
        self.dist = DistributedContext.from_env(train.device)
        self.device = self.dist.device
        self.output_dir = config.output_dir
        self.checkpoint_dir = os.path.join(self.output_dir, "checkpoints")
        if train.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(train.seed)  # the student's initial weights
        self.precision = self._resolve_precision()

        self.teacher = load_teacher(config.teacher.teacher_model, normalize=config.teacher.normalize,
                                    hub_kwargs=upstream_hub_kwargs(config.teacher)).to(self.device)
        prepare_teacher(self.teacher, config)  # S3PRL upstream teachers: their keys, objectives refused early
        self._cast_teacher()
        self.student = self._build_student()
        self._check_dimensions()
        layer_mapping = teacher_layer_mapping(self.teacher, self.student, config)
        self.objective = build_objective(config, layer_mapping)

        train_entries, valid_entries = build_manifests(config, self.student.receptive_field,
                                                       write_cache=not check_only)
        max_samples = int(train.max_audio_seconds * SAMPLE_RATE) if train.max_audio_seconds else None
        if max_samples is not None and self.dist.is_main:
            longer = sum(entry.num_samples > max_samples for entry in train_entries)
            logger.info("train.max_audio_seconds: utterances longer than %g s are read as a random %g s window "
                        "(set it to null for no limit); %d of %d in the manifest are longer",
                        train.max_audio_seconds, train.max_audio_seconds, longer, len(train_entries))
        # What the export records: teacher (kind, name, sha256), data (folders, hours), objective, precision.
        self.provenance = (run_provenance(config, self.teacher.kind, train_entries, self.precision)
                           if self.dist.is_main and not check_only else None)
        self.train_set = AudioDataset(train_entries, max_samples=max_samples, random_crop=True, seed=train.seed)
        self.valid_set = AudioDataset(valid_entries, max_samples=max_samples, random_crop=False) if valid_entries else None
        loader_options = dict(num_workers=train.num_workers, pin_memory=self.device.type == "cuda",
                              generator=torch.Generator().manual_seed(train.seed), worker_init_fn=ignore_sigint)
        self.train_loader = make_dataloader(self.train_set, train.batch_size, shuffle=True, seed=train.seed,
                                            num_replicas=self.dist.world_size, rank=self.dist.rank, **loader_options)
        self.valid_loader = (
            make_dataloader(self.valid_set, train.batch_size, shuffle=False, seed=train.seed,
                            num_replicas=self.dist.world_size, rank=self.dist.rank, **loader_options)
            if self.valid_set is not None else None
        )
        self.steps_per_epoch = math.ceil(len(self.train_loader) / train.accumulate_grad_batches)
        self.total_steps = train.max_steps or train.num_epochs * self.steps_per_epoch
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        self.optimizer, self.scheduler = build_optimizer(self.student.parameters(), config.optimizer, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.model: nn.Module = self.student
        if self.dist.enabled:
            # Heads outside the epoch's hint subset and FitHuBERT's S3PRL upsampler get no gradient.
            self.model = DistributedDataParallel(self.student, find_unused_parameters=True,
                                                 device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if train.compile:
            self.model = torch.compile(self.model)

        self.step = 0
        self.epoch = 0
        self._epoch_done = True
        self._last_saved_step = -1
        self._last_saved_path: Optional[str] = None
        self.stop = StopRequest()  # Ctrl-C: stop at the next step boundary, saved
        self.stopped = False
        self.best_valid = math.inf
        self.bad_steps = 0  # optimizer steps skipped in a row (non-finite loss or gradient)
        self.skipped_steps = 0  # in all, this process
        self.writer = self._summary_writer()
        if train.checkpoint:
            self._resume(train.checkpoint)

    # ------------------------------------------------------------------ setup
    def _build_student(self) -> StudentModel:
        config = self.config
        if config.train.init_student:
            student = load_student_checkpoint(config.train.init_student, config.family,
                                              {"distiller": config.student.to_dict()}, blocks=config.train.blocks)
        else:
            student = FAMILIES[config.family](config.student, blocks=block_table(config.train.blocks))
        reusing = sum(type(module).__name__.startswith("MapFree") for module in student.modules())
        logger.info("train.blocks %s: %d attention modules of the student are map-free", config.train.blocks, reusing)
        return student.to(self.device).train()

    def _check_dimensions(self) -> None:
        if self.config.objective in ("masking", "fithubert", "layer_hints"):
            head_dim = self.config.student.pred_head_final_dim
            if head_dim != self.teacher.embed_dim:
                raise ValueError(
                    f"distiller.pred_head_final_dim is {head_dim} but the teacher's layers are "
                    f"{self.teacher.embed_dim}-d: the heads must predict the teacher's width"
                )

    def _resolve_precision(self) -> str:
        precision = self.config.precision
        if precision == "fp16" and self.device.type != "cuda":
            logger.warning("precision fp16 needs CUDA; training in fp32 on %s", self.device)
            return "fp32"
        return precision

    def _cast_teacher(self) -> None:
        """bf16: the frozen model-class teacher computes in bf16, its weights cast once.

        Autocast would re-cast its 95M weights on every step and carry its activations in
        float32 between matmuls (a ~15% slower teacher phase on CPU); frozen weights need no
        float32 master copy. S3PRL upstream teachers of other kinds run under autocast as
        before; fp16 keeps a float32 teacher under autocast (HuBERT's activations can
        overflow fp16).
        """
        if self.precision == "bf16" and isinstance(self.teacher, Teacher):
            self.teacher.to(torch.bfloat16)
            logger.info("precision bf16: the teacher runs in bf16, the student under bf16 autocast with float32 "
                        "master weights, the losses in float32")

    def _summary_writer(self):
        if not self.dist.is_main or self.check_only:
            return None
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(self.config.to_dict(), handle, indent=2)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed: no training curves (pip install tensorboard)")
            return None
        return SummaryWriter(os.path.join(self.output_dir, "tensorboard"))

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps``; returns a summary (losses, export path).

        Ctrl-C stops at the end of the optimizer step under way: the summary then has
        ``interrupted: True`` and the ``checkpoint`` saved at that step, and nothing is exported.

        Raises:
            TrainingDiverged: ``train.max_bad_steps`` non-finite steps in a row.
            NoUsableAudio: a whole epoch gave no batch (every file read was skipped).
        """
        progress = tqdm(total=self.total_steps, initial=self.step, desc="distil", unit="step",
                        disable=not self.dist.is_main, dynamic_ncols=True)
        window = {"loss": 0.0, "utterances": 0, "started": time.perf_counter()}
        last_loss = math.nan
        try:
            with self.stop:
                while self.step < self.total_steps and not self.stopped:
                    last_loss = self._epoch(progress, window, last_loss)
            if self._last_saved_step != self.step:  # e.g. stopped mid-epoch at max_steps
                self.save()
        finally:
            progress.close()  # before any error line, not after it
        self.train_set.log_skip_summary()
        if self.stopped and self.step < self.total_steps:
            return {"steps": self.step, "last_loss": last_loss, "best_valid": self.best_valid, "export": None,
                    "interrupted": True, "checkpoint": self._last_saved_path}
        export = self.export()
        self.dist.barrier()
        return {"steps": self.step, "last_loss": last_loss, "best_valid": self.best_valid, "export": export}

    def _epoch(self, progress: tqdm, window: dict[str, Any], last_loss: float) -> float:
        """Train the current epoch (from the resumed position) until its end or ``total_steps``."""
        train = self.config.train
        accumulate = train.accumulate_grad_batches
        epoch = self.epoch
        from_start = self._epoch_done  # not resumed in its middle: every batch of the epoch comes
        self.train_loader.set_epoch(epoch)
        self.objective.set_epoch(epoch)
        self._epoch_done = False
        micro, used = 0, 0
        step_terms: dict[str, torch.Tensor] = {}
        step_files: list[torch.Tensor] = []  # dataset indices of the step's micro-batches
        for batch in self.train_loader:
            if self.dist.any(batch.is_empty):  # all ranks skip together, or DDP would hang
                continue
            used += 1
            step_files.append(batch.indices)
            batch = batch.to(self.device)
            micro += 1
            sync = micro == accumulate
            with self._no_sync(not sync), self._autocast():
                result = self.objective.training_loss(self.model, self.teacher, batch)
            self.scaler.scale(result.total / accumulate).backward()
            _accumulate(step_terms, result, accumulate)
            window["utterances"] += len(batch) * self.dist.world_size
            if sync:
                last_loss = self._optimizer_step(step_terms, progress, window, self._files(step_files))
                micro, step_terms, step_files = 0, {}, []
                if self._periodic(train.val_every_steps):
                    self.validate()
                if self._periodic(train.save_every_steps):
                    self.save()
                self.stopped = self.dist.any(self.stop.requested)  # every rank stops at the same step
                if self.step >= self.total_steps or self.stopped:
                    return last_loss
        if from_start and not used:
            # Every batch came out empty: another epoch would too, for ever.
            raise self._empty_epoch_error(epoch)
        if micro:  # the epoch's leftover micro-batches make one last, smaller step
            last_loss = self._optimizer_step(step_terms, progress, window, self._files(step_files))
        self.epoch = epoch + 1
        self._epoch_done = True
        if train.val_every_steps == 0:
            self.validate()
        if train.save_every_steps == 0:
            self.save()
        return last_loss

    def _optimizer_step(self, terms: dict[str, torch.Tensor], progress: tqdm, window: dict[str, Any],
                        files: Optional[list[str]] = None) -> float:
        if not self._step_is_finite(terms["loss"]):
            return self._skip_step(terms, files)
        self.bad_steps = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        terms = self.dist.mean(terms)
        loss = terms["loss"]
        lr = self.scheduler.get_last_lr()[0]
        window["loss"] += loss
        if self.dist.is_main:
            record = {"step": self.step, "epoch": self.epoch, "lr": lr, **terms}
            with open(os.path.join(self.output_dir, "metrics.jsonl"), "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.writer is not None:
                for name, value in terms.items():
                    self.writer.add_scalar(f"train/{name}", value, self.step)
                self.writer.add_scalar("train/lr", lr, self.step)
        if self.step % self.config.train.log_every_steps == 0 or self.step == 1:
            elapsed = time.perf_counter() - window["started"]
            speed = window["utterances"] / max(elapsed, 1e-9)
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", utt_s=f"{speed:.1f}")
            if self.writer is not None:
                self.writer.add_scalar("train/utterances_per_second", speed, self.step)
                self.writer.add_scalar("data/skipped_files", self.train_set.skipped, self.step)
            window.update(loss=0.0, utterances=0, started=time.perf_counter())
        progress.update(1)
        return loss

    def _periodic(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _no_sync(self, skip_sync: bool):
        if skip_sync and isinstance(self.model, DistributedDataParallel):
            return self.model.no_sync()
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> Optional[float]:
        if self.valid_loader is None:
            return None
        self.student.eval()
        total, count, terms = 0.0, 0, {}
        self.valid_loader.set_epoch(0)
        for batch in self.valid_loader:
            if batch.is_empty:
                continue
            batch = batch.to(self.device)
            with self._autocast():
                result = self.objective.validation_loss(self.student, self.teacher, batch)
            total += float(result.total) * len(batch)
            count += len(batch)
            for name, value in result.terms.items():
                terms[name] = terms.get(name, 0.0) + float(value) * len(batch)
        self.student.train()
        averaged = self.dist.mean({"loss": total / max(count, 1),
                                   **{name: value / max(count, 1) for name, value in terms.items()}})
        loss = averaged.pop("loss")
        terms = averaged
        improved = loss < self.best_valid
        self.best_valid = min(self.best_valid, loss)
        if self.dist.is_main:
            logger.info("step %d epoch %d | valid loss %.5f (best %.5f)%s | lr %.2e", self.step, self.epoch, loss,
                        self.best_valid, " *" if improved else "", self.scheduler.get_last_lr()[0])
            with open(os.path.join(self.output_dir, VALIDATION_FILE), "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": self.step, "epoch": self.epoch, "loss": loss, **terms}) + "\n")
            self.plot()
            if self.writer is not None:
                self.writer.add_scalar("valid/loss", loss, self.step)
                for name, value in terms.items():
                    self.writer.add_scalar(f"valid/{name}", value, self.step)
            if improved:
                self.save_best()
        return loss


def _accumulate(sums: dict[str, torch.Tensor], result: Any, accumulate: int) -> None:
    """Add a micro-batch's loss terms (detached, kept as tensors: no host sync per micro-batch)."""
    sums["loss"] = sums.get("loss", 0.0) + result.total.detach() / accumulate
    for name, value in result.terms.items():
        sums[name] = sums.get(name, 0.0) + value.detach() / accumulate
