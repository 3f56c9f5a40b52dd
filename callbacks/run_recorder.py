"""RunRecorder: writes what a training run is and what it produced into its MLflow run."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger

from callbacks.last_checkpoint import LastCheckpoint
from experiments.config import Config, flatten, to_dict, to_yaml
from experiments.tracking import store as tracking

SLIM_KEYS = ("state_dict", "hyper_parameters", "cxrlab", "epoch", "global_step", "pytorch-lightning_version")


def mlflow_logger(trainer: L.Trainer) -> MLFlowLogger | None:
    """The trainer's MLFlowLogger, if any."""
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a Lightning checkpoint without optimizer/loop state: what evaluate and predict need."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    torch.save({k: ckpt[k] for k in SLIM_KEYS if k in ckpt}, dst)
    return Path(dst)


class RunRecorder(L.Callback):
    """Params, tags, dataset and splits at fit start; best-epoch validation figures and the best
    checkpoint at fit end. Rank 0 only; a no-op without an MLFlowLogger (e.g. fast_dev_run)."""

    def __init__(self, config: Config, resumed_from: str | None = None) -> None:
        self.config = config
        self.resumed_from = resumed_from
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
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        run_id = logger.run_id
        pl_module.run_info = {"run_id": run_id, "tracking_uri": logger._tracking_uri}
        if not trainer.is_global_zero:
            return
        client, dm = logger.experiment, trainer.datamodule
        table = dm.prepare_table()
        params = {k: str(v) for k, v in flatten(to_dict(self.config)).items()}
        params |= {
            "classes": ",".join(dm.classes),
            "data.n_train": str(int((table["split"] == "train").sum())),
            "data.n_val": str(int((table["split"] == "val").sum())),
            "data.n_test": str(int((table["split"] == "test").sum())),
            "data.skipped_images": str(len(dm.skipped)),
            # data.source=combine mixes datasets: how many images each contributed.
            "data.images_per_source": ",".join(f"{k}:{v}" for k, v in table["source"].value_counts().items()),
        }
        # A resumed run keeps its params (MLflow forbids changing them); new keys are added.
        existing = client.get_run(run_id).data.params
        from mlflow.entities import Param

        fresh = [Param(k, v[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(fresh), 100):
            client.log_batch(run_id, params=fresh[i : i + 100])
        if self.resumed_from:
            client.set_tag(run_id, "cxrlab.resumed_from", self.resumed_from)
        files = {"config.yaml": to_yaml(self.config), "splits.csv": table[["path", "label", "patient_id", "source", "split"]]}
        if len(dm.skipped):
            files["skipped_images.csv"] = dm.skipped
        tracking.log_objects(client, run_id, files)
        client.log_metric(run_id, "data/skipped_images", len(dm.skipped))
        self._log_dataset(client, run_id, table)

    def _log_dataset(self, client: Any, run_id: str, table: Any) -> None:
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        cols = ["path", "label", "patient_id", "split"]
        dataset = mlflow.data.from_pandas(
            table[cols], source=str(self.config.data.root), targets="label", name=str(table["source"].iloc[0])
        )
        tag = InputTag(key="mlflow.data.context", value="training")
        tracking.log_inputs_once(client, run_id, [DatasetInput(dataset._to_mlflow_entity(), tags=[tag])])

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
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        client, run_id = logger.experiment, logger.run_id
        # MLflow shows a metric's latest value; best/* is what runs should be compared on.
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        best_logged = [Metric(f"best/{k}", v, now, trainer.global_step) for k, v in self.best_metrics.items()]
        if best_logged:
            client.log_batch(run_id, metrics=best_logged)
        if self.best_outputs is not None:
            tracking.log_objects(client, run_id, eval_figures("val", *self.best_outputs, pl_module.classes))
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best and self.config.tracking.log_checkpoint:
            with tempfile.TemporaryDirectory() as tmp:
                slim = slim_checkpoint(best, Path(tmp) / "model.ckpt")
                client.log_artifact(run_id, str(slim), "checkpoints")
        if best:
            client.set_tag(run_id, "cxrlab.best_checkpoint", str(Path(best).resolve()))


class LastCheckpointUpload(L.Callback):
    """Uploads last.ckpt to the run as checkpoints/last.ckpt after every epoch (rank 0), so a run
    recorded on a tracking server resumes on any node: --resume runs:/RUN_ID/checkpoints/last.ckpt."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation (which rewrites last.ckpt) has run by now: this is the epoch's checkpoint.
        logger = mlflow_logger(trainer)
        last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        if logger is None or last is None or not trainer.is_global_zero:
            return
        path = last.path(trainer)
        if path.is_file():
            logger.experiment.log_artifact(logger.run_id, str(path), str(Path(tracking.RUN_LAST_CHECKPOINT).parent))


def eval_figures(split: str, probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Confusion matrix (counts and row-normalised) and one-vs-rest ROC of one split."""
    from sklearn.metrics import confusion_matrix

    from experiments.evaluation.clinical import roc_curves
    from experiments.evaluation.figures import plot_confusion_matrix, plot_roc

    y, p = targets.numpy(), probs.numpy()
    cm = confusion_matrix(y, p.argmax(1), labels=list(range(len(classes))))
    return {
        f"{split}_confusion_matrix.png": plot_confusion_matrix(cm, classes),
        f"{split}_confusion_matrix_norm.png": plot_confusion_matrix(cm, classes, normalize=True),
        f"{split}_roc.png": plot_roc(roc_curves(y, p), classes),
    }


def run_artifact_sink(trainer: L.Trainer, folder: str, objects: dict[str, Any]) -> None:
    """Write artifacts into the trainer's MLflow run (rank 0; nothing without an MLFlowLogger)."""
    logger = mlflow_logger(trainer)
    if logger is not None and trainer.is_global_zero:
        tracking.log_objects(logger.experiment, logger.run_id, objects, folder)


def run_tag_sink(trainer: L.Trainer, tags: dict[str, str]) -> None:
    """Set tags on the trainer's MLflow run (rank 0; nothing without an MLFlowLogger)."""
    logger = mlflow_logger(trainer)
    if logger is not None and trainer.is_global_zero:
        for key, value in tags.items():
            logger.experiment.set_tag(logger.run_id, key, value)
