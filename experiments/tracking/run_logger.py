"""The training run's MLFlowLogger: exactly one value per metric and step, also across a resume."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only


class RunLogger(MLFlowLogger):
    """MLFlowLogger that, when continuing a run, drops the steps its history already has.

    A run killed mid-epoch has logged metrics past its last checkpoint; the resumed run retrains
    those steps. Logging them again would give two values at one step, so the first attempt's
    values are kept and the replay is not logged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._continuing = kwargs.get("run_id") is not None
        self._last_step: dict[str, int] | None = None

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
            super().log_metrics(fresh, step)
            last.update(dict.fromkeys(fresh, at))
