"""PruneOnValidation: an Optuna trial sees every validation epoch and may stop the fit."""

from __future__ import annotations

import math

import lightning as L
import optuna


class PruneOnValidation(L.Callback):
    """Report `metric` to the trial at every validation epoch end; stop the fit when pruned."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None or not math.isfinite(float(value)):
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self.metric}={float(value):.4f}")
