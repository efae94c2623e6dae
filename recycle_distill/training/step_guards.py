"""The trainer's guards against steps and epochs that cannot train: their checks and their errors.

A step whose loss or gradient is NaN/inf on any rank is skipped on every rank (no optimizer or
scheduler update, a warning naming its batch); ``train.max_bad_steps`` such steps in a row stop
the run with :class:`TrainingDiverged`. An epoch in which every file read was skipped, or a
``--check`` probe that would skip every file it reads, stops it with :class:`NoUsableAudio`.

:class:`StepGuards` is mixed into :class:`~recycle_distill.training.trainer.Trainer`, whose
attributes it reads and updates: ``config``, ``dist``, ``scaler``, ``optimizer``, ``student``,
``train_set``, ``writer``, ``step``, ``bad_steps``, ``skipped_steps`` and ``checkpoint_dir``.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from recycle_distill.training.data.dataset import format_counts
from recycle_distill.util.messages import short_repr

# The trainer's logger, not this module's: the skip warnings keep the logger name they have
# always had, so logging filters and levels set on recycle_distill.training.trainer still apply.
logger = logging.getLogger("recycle_distill.training.trainer")

__all__ = ["NoUsableAudio", "StepGuards", "TrainingDiverged"]

# Files a message names at most (a batch's, the check's).
SHOWN_FILES = 4


class TrainingDiverged(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


class NoUsableAudio(RuntimeError):
    """Every file read was skipped: an epoch made no optimizer step (or ``--check`` saw none usable)."""


class StepGuards:
    """The non-finite step check and skip, and the refusals of data with no usable audio."""

    def _files(self, indices: list[torch.Tensor]) -> list[str]:
        """The sorted paths of the files behind some batches' dataset indices."""
        chosen = {int(i) for batch in indices for i in batch.tolist()}
        return sorted(self.train_set.entries[i].path for i in chosen)

    def _empty_epoch_error(self, epoch: int) -> NoUsableAudio:
        """The refusal of epoch ``epoch`` (counted from 0), none of whose batches held a usable file."""
        dataset = self.train_set
        return NoUsableAudio(
            f"epoch {epoch + 1} made no optimizer step: {dataset.skipped} of {len(dataset)} training files were "
            f"skipped when read ({format_counts(dataset.skip_summary())}), so every batch was empty; fix or "
            "remove those files (the warnings above name each one)"
        )

    def probe_data(self) -> str:
        """``--check``: read a few training files as training would (all when few); refuse when
        every one would be skipped, since training could then make no step. Returns a summary."""
        dataset = self.train_set
        read, skipped = dataset.probe()
        which = f"all {read}" if read == len(dataset) else f"{read} of the {len(dataset)}"
        spread = "" if read == len(dataset) else " (spread over the manifest)"
        if read and skipped == read:
            raise NoUsableAudio(
                f"data: --check read {which} training files{spread} and every one would be skipped "
                f"({format_counts(dataset.skip_summary())}); training would make no step: fix or remove those "
                "files (the warnings above name each one)"
            )
        return f"read {which} training files{spread}, {skipped} would be skipped"

    def _step_is_finite(self, loss: torch.Tensor) -> bool:
        """Unscale and clip; True on every rank when loss and gradient are finite on all ranks.

        With the fp16 scaler, non-finite gradients are its own business (it skips the step and
        lowers the scale); only a non-finite loss counts then.
        """
        train = self.config.train
        self.scaler.unscale_(self.optimizer)
        finite = torch.isfinite(torch.as_tensor(loss)).all()
        params = [p for p in self.student.parameters() if p.grad is not None]
        if train.gradient_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, train.gradient_clip)
            grads_ok = torch.isfinite(norm)
        else:
            grads_ok = torch.stack([torch.isfinite(p.grad).all() for p in params]).all() if params else finite
        if not self.scaler.is_enabled():
            finite = finite & grads_ok
        return not self.dist.any(not bool(finite))

    def _skip_step(self, terms: dict[str, torch.Tensor], files: Optional[list[str]] = None) -> float:
        """Drop this step's gradients; the optimizer and the schedule do not move.

        ``files``: the paths of the step's batch, named in the warning and in the final error."""
        self.scaler.update()  # unscale_ was called; the scaler needs its update before the next one
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_steps += 1
        loss = float(torch.as_tensor(terms["loss"]))
        limit = self.config.train.max_bad_steps
        shown = _name_files(files) if files else ""
        if self.dist.is_main:
            logger.warning("step %d: non-finite loss or gradient (loss %s); optimizer step skipped (%d in a row, "
                           "stopping at %d)%s", self.step + 1, loss, self.bad_steps, limit,
                           f"; its batch: {shown}" if shown else "")
            if self.writer is not None:
                self.writer.add_scalar("train/skipped_steps", self.skipped_steps, self.step)
        if self.bad_steps >= limit:
            advice = (f"the last one's batch: {shown}; check those files, lower optimizer.lr, or raise "
                      "train.max_bad_steps" if shown else
                      "lower optimizer.lr, check the audio, or raise train.max_bad_steps")
            raise TrainingDiverged(
                f"stopped at step {self.step + 1}: {self.bad_steps} optimizer steps in a row had a non-finite loss "
                f"or gradient; {advice} (the last checkpoint is in {self.checkpoint_dir})"
            )
        return loss


def _name_files(paths: list[str], limit: int = SHOWN_FILES) -> str:
    """The first ``limit`` paths (escaped when not printable, each bounded), then how many in all."""
    shown = [path if path.isprintable() and len(path) <= 200 else short_repr(path, 200) for path in paths[:limit]]
    return ", ".join(shown) + (f", ... ({len(paths)} in all)" if len(paths) > limit else "")
