"""RunRecorder and LastCheckpointUpload: what a training run is and what it produced, written into
its MLflow run through a writer they are given (callbacks sit below tracking and do not import it)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import lightning as L
import torch

from cxrlab.callbacks.last_checkpoint import LastCheckpoint
from cxrlab.callbacks.run_sink import SinkOf
from cxrlab.config import Config, flatten, to_dict, to_yaml
from cxrlab.lightning_modules.checkpoint import slim_checkpoint

# Figures of one split's outputs: (split, probabilities, targets, classes) -> {file name: Figure}.
Figures = Callable[[str, torch.Tensor, torch.Tensor, list[str]], dict[str, Any]]


class RunRecorder(L.Callback):
    """Params, tags, dataset and splits at fit start; best-epoch validation figures and the best
    checkpoint at fit end. Rank 0 only; a no-op where `sink_of` gives no run (e.g. fast_dev_run)."""

    def __init__(
        self,
        config: Config,
        sink_of: SinkOf,
        checkpoint_artifact: str,
        figures: Figures | None = None,
        resumed_from: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.sink_of = sink_of
        self.checkpoint_artifact = checkpoint_artifact  # where the slim best checkpoint goes in the run
        self.figures = figures
        self.resumed_from = resumed_from
        self.tags = dict(tags or {})  # set at every fit start (which process writes the run now)
        self.best_score: float | None = None
        self.best_outputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.best_metrics: dict[str, float] = {}

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_score is None:
            return True
        return value > self.best_score if self.config.trainer.mode == "max" else value < self.best_score

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sink = self.sink_of(trainer)
        if sink is None:
            return
        pl_module.run_info = {"run_id": sink.run_id, "tracking_uri": sink.uri}
        dm = trainer.datamodule
        table = dm.prepare_table()
        params = flatten(to_dict(self.config)) | {
            "classes": ",".join(dm.classes),
            "data.n_train": int((table["split"] == "train").sum()),
            "data.n_val": int((table["split"] == "val").sum()),
            "data.n_test": int((table["split"] == "test").sum()),
            "data.skipped_images": len(dm.skipped),
            # data.source=combine mixes datasets: how many images each contributed.
            "data.images_per_source": ",".join(f"{k}:{v}" for k, v in table["source"].value_counts().items()),
        }
        sink.log_params(params)  # a resumed run keeps its params; new keys are added
        sink.set_tags(self.tags | ({"cxrlab.resumed_from": self.resumed_from} if self.resumed_from else {}))
        files = {"config.yaml": to_yaml(self.config), "splits.csv": table[["path", "label", "patient_id", "source", "split"]]}
        if len(dm.skipped):
            files["skipped_images.csv"] = dm.skipped
        sink.log_objects(files)
        if not self.resumed_from:  # one value at step 0: the first attempt logged it
            sink.log_metrics({"data/skipped_images": len(dm.skipped)})
        sink.log_dataset(
            table[["path", "label", "patient_id", "split"]], str(self.config.data.root), str(table["source"].iloc[0])
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val" not in pl_module.last_outputs:
            return
        value = trainer.callback_metrics.get(self.config.trainer.monitor)
        if value is not None and self._better(float(value)):
            self.best_score = float(value)
            self.best_outputs = pl_module.last_outputs["val"]
            self.best_metrics = {
                k: float(v) for k, v in trainer.callback_metrics.items()
                if k.startswith(("val/", "explain/")) and torch.is_tensor(v) and v.numel() == 1
            }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sink = self.sink_of(trainer)
        if sink is None:
            return
        # MLflow shows a metric's latest value; best/* is what runs should be compared on.
        sink.log_metrics({f"best/{k}": v for k, v in self.best_metrics.items()}, step=trainer.global_step)
        if self.best_outputs is not None and self.figures is not None:
            sink.log_objects(self.figures("val", *self.best_outputs, pl_module.classes))
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best and self.config.tracking.log_checkpoint:
            with tempfile.TemporaryDirectory() as tmp:
                name = PurePosixPath(self.checkpoint_artifact).name
                sink.log_file(slim_checkpoint(best, Path(tmp) / name), self.checkpoint_artifact)
        if best:
            sink.set_tags({"cxrlab.best_checkpoint": str(Path(best).resolve())})


class LastCheckpointUpload(L.Callback):
    """Uploads last.ckpt to the run as `artifact` (checkpoints/last.ckpt) after every epoch (rank 0),
    so a run recorded on a tracking server resumes on any node: --resume runs:/RUN_ID/<artifact>."""

    def __init__(self, sink_of: SinkOf, artifact: str) -> None:
        self.sink_of = sink_of
        self.artifact = artifact

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation (which rewrites last.ckpt) has run by now: this is the epoch's checkpoint.
        last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        sink = self.sink_of(trainer) if last is not None else None
        if sink is None:
            return
        path = last.path(trainer)
        if path.is_file():
            sink.log_file(path, self.artifact)
