"""RunSink: the writes callbacks make to their training run. The one MLflow writer
(cxrlab.experiments.tracking.writer.RunWriter) implements it by subclassing it, and the training
runner hands that writer to the callbacks, which sit below tracking and do not import it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import pandas as pd


class RunSink(Protocol):
    """The writes a training run's callbacks make; RunWriter is the implementation."""

    run_id: str

    @property
    def uri(self) -> str: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_objects(self, objects: Mapping[str, Any], folder: str | None = None) -> None: ...
    def log_file(self, path: str | Path, artifact_file: str) -> None: ...
    def log_dataset(self, table: pd.DataFrame, source: str, name: str, context: str = "training") -> None: ...


# The trainer's run on global rank 0; None on other ranks or when nothing is recorded (fast_dev_run).
SinkOf = Callable[[L.Trainer], RunSink | None]
