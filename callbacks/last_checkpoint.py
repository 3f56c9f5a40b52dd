"""LastCheckpoint: `last.ckpt` rewritten atomically at the end of every epoch, for crash-safe resume."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn

LAST_NAME = "last.ckpt"


class LastCheckpoint(Checkpoint):
    """Write `last.ckpt` beside the best checkpoint after every validation epoch.

    Lightning's `save_last=True` rewrites last.ckpt only when the monitored metric improves, so a
    crash could resume from an old epoch. Writing a temp file and renaming it means a crash during
    the save leaves the previous last.ckpt intact instead of a truncated one.
    """

    def __init__(self, dirpath: str | Path | None = None) -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None

    def path(self, trainer: L.Trainer) -> Path:
        """Where last.ckpt is written."""
        return self._folder(trainer) / LAST_NAME

    def _folder(self, trainer: L.Trainer) -> Path:
        if self.dirpath is not None:
            return self.dirpath
        best = trainer.checkpoint_callback
        if best is not None and getattr(best, "dirpath", None):
            return Path(best.dirpath)
        return Path(trainer.default_root_dir) / "checkpoints"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        final = self.path(trainer)
        tmp = final.with_name(f".{LAST_NAME}.tmp")
        # The full state (optimizer, loops), since resuming needs it. Collective under DDP:
        # every rank calls, rank 0 writes.
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, final)
