"""The trainer's checkpoints: what one holds, saving, resuming exactly, the final export.

:class:`RunCheckpoints` is mixed into :class:`~recycle_distill.training.trainer.Trainer`, whose
attributes it reads and updates: ``config``, ``dist``, ``student``, ``optimizer``, ``scheduler``,
``scaler``, ``train_loader``, ``step``, ``epoch``, ``best_valid``, ``bad_steps``, ``_epoch_done``,
``check_only``, ``output_dir``, ``checkpoint_dir`` and ``provenance``. The file formats and the
atomic writes are :mod:`recycle_distill.training.state`'s.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any, Optional

from recycle_distill.training.loss_plot import write_loss_plot
from recycle_distill.training.state import (
    capture_rng,
    export_student,
    latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    restore_rng,
    save_training_state,
)

# The trainer's logger: the checkpoint lines keep the logger name they have always had.
logger = logging.getLogger("recycle_distill.training.trainer")

__all__ = ["RunCheckpoints"]


class RunCheckpoints:
    """Save, resume and export for the trainer (a mixin; see the module doc)."""

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            # Between epochs the next one starts from its beginning; inside one, at the next batch.
            "data": None if self._epoch_done else self.train_loader.state_dict(),
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(),
            "best_valid": self.best_valid,
            "bad_steps": self.bad_steps,
            "family": self.config.family,
            "config": self.config.to_dict(),
        }

    def save(self) -> Optional[str]:
        self._last_saved_step = self.step
        if not self.dist.is_main:
            return None
        path = save_training_state(self.checkpoint_dir, self.step, self._state())
        self._last_saved_path = path
        prune_checkpoints(self.checkpoint_dir, self.config.train.keep_last)
        logger.info("checkpoint %s", path)
        self.plot()
        return path

    def save_best(self) -> str:
        """``best.pt``: the state at the best validation loss so far (main rank)."""
        return save_training_state(self.checkpoint_dir, self.step, self._state(), name="best.pt")

    def plot(self) -> Optional[str]:
        """Redraw ``<output_dir>/loss.svg`` from the run's logs (main rank)."""
        return write_loss_plot(self.output_dir, title=f"{self.config.family} ({self.config.objective})")

    def _resume(self, checkpoint: str) -> None:
        path = latest_checkpoint(self.checkpoint_dir) if checkpoint == "last" else checkpoint
        if path is None:
            logger.info("no checkpoint in %s: starting fresh", self.checkpoint_dir)
            return
        for stale in [] if self.check_only else glob.glob(os.path.join(self.checkpoint_dir, ".tmp-*")):
            os.remove(stale)  # left by a write that was killed; the renamed files are intact (--check writes nothing)
        state = load_training_state(path)
        if state["family"] != self.config.family:
            raise ValueError(f"{path}: a {state['family']} run, but this config trains {self.config.family}")
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.best_valid = int(state["step"]), int(state["epoch"]), float(state["best_valid"])
        self.bad_steps = int(state.get("bad_steps", 0))
        if state["data"] is not None:
            self.train_loader.load_state_dict(state["data"])
            self._epoch_done = False
        restore_rng(state["rng"])
        logger.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    def export(self) -> Optional[str]:
        if not self.dist.is_main:
            return None
        path = os.path.join(self.output_dir, "student.safetensors")
        export_student(path, self.student, self.config.family, self.config.train.delete_projections,
                       provenance={**(self.provenance or {}), "steps": self.step})
        logger.info("exported the student to %s", path)
        return path
