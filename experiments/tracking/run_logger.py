"""The training run's MLFlowLogger, writing through the RunWriter: exactly one value per metric and
step, also across a resume; and the trainer's writer for the callbacks (rank 0 only)."""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from cxrlab.experiments.tracking.writer import RunWriter


class RunLogger(MLFlowLogger):
    """MLFlowLogger whose writes go through the run's RunWriter; when continuing a run, it drops
    the steps the history already has.

    Lightning still creates the run (lazily, on global rank 0 once the strategy knows the ranks)
    and closes it; every param and metric is written by the writer. A run killed mid-epoch has
    logged metrics past its last checkpoint; the resumed run retrains those steps. Logging them
    again would give two values at one step, so the first attempt's values are kept.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._continuing = kwargs.get("run_id") is not None
        self._last_step: dict[str, int] | None = None
        self._writer: RunWriter | None = None
        self._wrote_metrics = False  # this attempt has logged a step the run did not have

    @property
    def writer(self) -> RunWriter:
        """The writer of this logger's run (creates the run on first use; rank 0 only)."""
        if self._writer is None:
            self._writer = RunWriter(self.experiment, self.run_id)
        return self._writer

    def _history(self) -> dict[str, int]:
        """The last logged step of every metric of the run (empty for a new run)."""
        if self._last_step is None:
            self._last_step = {}
            if self._continuing:
                client = self.experiment
                for key in client.get_run(self.run_id).data.metrics:
                    steps = [m.step for m in client.get_metric_history(self.run_id, key)]
                    self._last_step[key] = max(steps, default=-1)
        return self._last_step

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        last = self._history()
        at = step or 0
        fresh = {k: v for k, v in metrics.items() if at > last.get(k, -1)}
        if fresh:
            self.writer.log_metrics(fresh, at)
            last.update(dict.fromkeys(fresh, at))
            self._wrote_metrics = True

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Close the run; a continued run that failed before logging anything new keeps its status
        (a refused or broken resume must not turn a FINISHED run into a FAILED one)."""
        if status == "failed" and self._continuing and not self._wrote_metrics:
            return
        super().finalize(status)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        self.writer.log_params(_flatten_dict(_convert_params(params)))


def run_writer(trainer: L.Trainer) -> RunWriter | None:
    """The writer of the trainer's MLflow run on global rank 0; None elsewhere or without a RunLogger
    (e.g. fast_dev_run)."""
    logger = next((lg for lg in trainer.loggers if isinstance(lg, RunLogger)), None)
    return logger.writer if logger is not None and trainer.is_global_zero else None

