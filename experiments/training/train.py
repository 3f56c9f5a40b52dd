"""The training runner: config -> DataModule + CXRClassifier + Trainer, one MLflow run."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.tracking import MlflowClient

from cxrlab.callbacks import console
from cxrlab.callbacks.epoch_explanations import ExplainCallback
from cxrlab.callbacks.epoch_lines import EpochLines
from cxrlab.callbacks.last_checkpoint import LastCheckpoint
from cxrlab.callbacks.run_recorder import LastCheckpointUpload, RunRecorder
from cxrlab.callbacks.trust_fit import TrustFit
from cxrlab.config import Config
from cxrlab.datamodules.datamodule import CXRDataModule
from cxrlab.datamodules.images import Decoding
from cxrlab.experiments.evaluation import served_model
from cxrlab.experiments.evaluation.figures import eval_figures
from cxrlab.experiments.tracking import checkpoints, liveness, store, writer
from cxrlab.experiments.tracking.run_logger import RunLogger, run_writer
from cxrlab.experiments.training.signals import stop_signals
from cxrlab.lightning_modules.backbones import default_input_size
from cxrlab.lightning_modules.checkpoint import slim_checkpoint
from cxrlab.lightning_modules.classifier import CXRClassifier


@dataclass
class TrainResult:
    """What a finished training run produced."""

    run_id: str | None
    experiment_id: str | None
    best_checkpoint: str | None
    best_score: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    interrupted: bool = False
    exit_code: int = 0  # 143 / 130 when SIGTERM / SIGINT stopped it
    last_checkpoint: str | None = None  # last.ckpt: the last completed epoch, what --resume takes
    model_id: str | None = None  # the MLflow logged model of the best checkpoint (models:/<id>)


def resolve(cfg: Config, task: str | None = None) -> Config:
    """A copy with derived values filled in (input size from the backbone, run name; with the
    data's `task` known, data.task and what trainer.monitor auto means)."""
    cfg = copy.deepcopy(cfg)
    if task is not None:
        cfg.data.task = task  # type: ignore[assignment]  (a resolved choice of the same Literal)
        cfg.trainer.monitor = cfg.trainer.monitor_for(task)
    if cfg.data.image_size is None:
        cfg.data.image_size = default_input_size(cfg.model.backbone)
    if cfg.tracking.run_name is None:
        cfg.tracking.run_name = f"{cfg.model.backbone}-{cfg.model.head}-{cfg.model.finetune}"
    return cfg


def parse_devices(devices: str) -> int | list[int] | str:
    """'auto' | '2' | '0,1' -> what Lightning expects."""
    if devices == "auto":
        return devices
    if "," in devices or devices.startswith("["):
        return [int(d) for d in devices.strip("[]").split(",") if d.strip()]
    try:
        return int(devices)
    except ValueError:
        raise ValueError(f"trainer.devices={devices!r}; use auto, a count (2) or ids (0,1)") from None


def precision_for(cfg: Config) -> str:
    """bf16-mixed where CUDA will be used and supports it, else 32-true, unless set."""
    t = cfg.trainer
    if t.precision != "auto":
        return t.precision
    on_cuda = t.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_cuda and torch.cuda.is_bf16_supported() else "32-true"


def run_tags(cfg: Config, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags every training run carries."""
    m = cfg.model
    return writer.run_tags("train", m.backbone, m.head, m.finetune, cfg.data.root) | (extra or {})


def build_trainer(cfg: Config, logger: MLFlowLogger | None, callbacks: Sequence[L.Callback]) -> L.Trainer:
    """A Lightning Trainer for the config, with checkpointing and early stopping on the monitor."""
    t = cfg.trainer
    cbs = list(callbacks)
    if not t.fast_dev_run:
        cbs.append(
            ModelCheckpoint(
                monitor=t.monitor, mode=t.mode, save_top_k=1, save_last=False,
                filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
            )
        )
        cbs.append(LastCheckpoint())
        if logger is not None:
            cbs.append(LearningRateMonitor(logging_interval="epoch"))
    if t.patience is not None:
        cbs.append(EarlyStopping(monitor=t.monitor, mode=t.mode, patience=t.patience))
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=parse_devices(t.devices),
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=precision_for(cfg),
        logger=logger if logger is not None else False,
        callbacks=cbs,
        limit_train_batches=_limit(t.limit_train_batches),
        limit_val_batches=_limit(t.limit_val_batches),
        limit_test_batches=_limit(t.limit_test_batches),
        fast_dev_run=t.fast_dev_run,
        log_every_n_steps=t.log_every_n_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar and console.level() > console.QUIET,
        enable_model_summary=console.level() >= console.VERBOSE,
        # Checkpoints land in <store dir>/checkpoints/<experiment id>/<run id>/checkpoints.
        # (fast_dev_run writes nothing, so it needs no store: resolving the URI would create one.)
        default_root_dir=None if t.fast_dev_run else str(
            checkpoints.checkpoint_root(store.resolve_uri(cfg.tracking.uri), cfg.tracking.checkpoint_dir)
        ),
    )


def _limit(v: float) -> float | int:
    """Lightning reads a float as a fraction and an int as a batch count; 1.0 stays 'all'."""
    return int(v) if v.is_integer() and v != 1.0 else v


def train(
    cfg: Config,
    resume: str | None = None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> TrainResult:
    """Train one model; everything is recorded in one MLflow run (continued when resuming)."""
    console.hush_libraries()
    cfg = resolve(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = CXRDataModule(cfg.data, seed=cfg.seed)
    dm.prepare_table()
    cfg = resolve(cfg, dm.task)  # the checkpoint stores the task the data turned out to have
    model = CXRClassifier(cfg, dm.classes, dm.class_weights)
    if rank_zero_only.rank == 0:
        _header(cfg, dm, resume)
    logger = None
    uploads: list[L.Callback] = []
    if not cfg.trainer.fast_dev_run:
        uri = store.resolve_uri(cfg.tracking.uri)
        if cfg.tracking.upload_last and store.is_server(uri):  # another node resumes from the server
            uploads.append(LastCheckpointUpload(run_writer, checkpoints.RUN_LAST_CHECKPOINT))
        if run_id is None:  # ours, not the logger's: tagged, and safe when runs start together
            store.ensure_experiment(MlflowClient(uri), cfg.tracking.experiment, uri)
        if rank_zero_only.rank == 0:
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(cfg.tracking.experiment)
            if experiment is not None:
                liveness.close_dead_runs(client, experiment.experiment_id, keep=run_id)
        logger = RunLogger(
            experiment_name=cfg.tracking.experiment,
            run_name=None if run_id else cfg.tracking.run_name,
            tracking_uri=uri,
            tags=None if run_id else run_tags(cfg, tags),
            artifact_location=store.artifact_location(uri),
            run_id=run_id,
        )
    recorder = RunRecorder(
        cfg, run_writer, checkpoints.RUN_CHECKPOINT, eval_figures, resumed_from=resume, tags=liveness.process_tags()
    )
    # Order matters: explanations land in callback_metrics before the recorder snapshots the best
    # epoch and before a sweep's pruning callback reads its objective.
    explainers = (
        [ExplainCallback(cfg.explain, cfg.seed, run_writer)] if cfg.explain.enabled else []
    )
    lines = EpochLines(cfg.trainer.monitor, cfg.trainer.mode)
    # Before the recorder: the checkpoint it logs carries the trust model.
    trust = [TrustFit(cfg.trust)] if cfg.trust.enabled else []
    trainer = build_trainer(cfg, logger, [*explainers, lines, *callbacks, *trust, recorder, *uploads])
    with stop_signals() as stop:
        try:
            trainer.fit(model, datamodule=dm, ckpt_path=resume)
        except SystemExit:
            # Lightning ends a fit stopped by SIGTERM or Ctrl-C with SystemExit (status 0 and 1).
            if stop.received is None:
                raise
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    last = next((c.path(trainer) for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    result = TrainResult(
        run_id=logger.run_id if logger is not None and trainer.is_global_zero else None,
        experiment_id=logger.experiment_id if logger is not None and trainer.is_global_zero else None,
        best_checkpoint=best,
        best_score=float(ckpt_cb.best_model_score) if best and ckpt_cb.best_model_score is not None else None,
        classes=dm.classes,
        interrupted=trainer.interrupted or stop.received is not None,
        exit_code=stop.exit_code,
        last_checkpoint=str(last) if last is not None and last.is_file() else None,
    )
    if result.interrupted:
        if logger is not None and trainer.is_global_zero:
            logger.writer.finish("KILLED")  # stopped on purpose, not failed: resumable
        return result
    result.metrics = dict(recorder.best_metrics)
    if len(dm.split_table("test")):
        trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False)
        result.metrics |= {
            k: float(v) for k, v in trainer.callback_metrics.items()
            if k.startswith("test/") and torch.is_tensor(v) and v.numel() == 1
        }
    if best and logger is not None and trainer.is_global_zero and cfg.tracking.log_checkpoint:
        example = dm.split_table("all")["path"].iloc[0]
        result.model_id = log_best_model(logger.writer, best, model, example, result.metrics, trainer.global_step)
    return result


def log_best_model(run: writer.RunWriter, best: str, model: CXRClassifier, example_image: str,
                   metrics: dict[str, float], step: int) -> str:
    """The best checkpoint of `model`, slimmed, as the run's MLflow logged model, with its best-epoch
    and test metrics linked (the Models tab compares models on them); returns the model id."""
    linked = {k if k.startswith("test/") else f"best/{k}": v for k, v in metrics.items()}
    with tempfile.TemporaryDirectory() as tmp:
        slim = slim_checkpoint(best, Path(tmp) / "model.ckpt")
        decoding = Decoding.from_data(model.config.data)
        return served_model.log_served_model(run, slim, model.classes, decoding, example_image, linked, step)


def _header(cfg: Config, dm: CXRDataModule, resume: str | None) -> None:
    """What is about to train, on what, where it runs and where it is recorded."""
    m = cfg.model
    counts = " / ".join(f"{len(dm.split_table(s))} {s}" for s in ("train", "val", "test") if len(dm.split_table(s)))
    device = "cuda" if cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    console.say(f"cxrlab train: {cfg.tracking.run_name}" + (f" (resuming {resume})" if resume else ""))
    console.table([
        ("data", f"{cfg.data.root} ({dm.table['source'].iloc[0]}): {counts} images, classes {', '.join(dm.classes)}"),
        ("model", f"{m.backbone} {m.head}, fine-tune {m.finetune}, {m.optimizer} lr {m.lr:g}, {cfg.data.image_size} px"),
        ("run", f"{cfg.trainer.max_epochs} epochs on {device}, picked by {cfg.trainer.monitor} ({cfg.trainer.mode})"),
        ("store", store.resolve_uri(cfg.tracking.uri) if not cfg.trainer.fast_dev_run else "none (fast_dev_run)"),
    ])


def resume_config(ckpt: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The config dict and MLflow run id stored in a checkpoint."""
    return ckpt["hyper_parameters"]["config"], ckpt.get("cxrlab", {}).get("run_id")
