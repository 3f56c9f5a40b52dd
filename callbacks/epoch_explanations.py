"""ExplainCallback: explanations of a fixed validation probe set at validation epoch end."""

from __future__ import annotations

import lightning as L
import torch

from cxrlab.callbacks import console
from cxrlab.callbacks.explanations.aopc import check_grid
from cxrlab.callbacks.explanations.explanation_pass import explain_image_set, sample_images
from cxrlab.callbacks.run_sink import SinkOf
from cxrlab.config import ExplainConfig
from cxrlab.datamodules.probe import ImageSet


class ExplainCallback(L.Callback):
    """Heatmaps, eigen-heatmaps, AOPC, focus and the shortcut alarm on a stratified validation probe set.

    Rank 0 computes and writes (metrics to the loggers, artifacts under explain/epoch_NNN/ of the
    MLflow run); every rank joins the broadcast of the metrics, so callback_metrics (and thus
    checkpointing, early stopping or a sweep objective on explain/*) agree across ranks.
    """

    def __init__(
        self,
        settings: ExplainConfig,
        seed: int = 0,
        sink_of: SinkOf | None = None,
    ) -> None:
        self.settings = settings
        self.seed = seed
        self.sink_of = sink_of  # the trainer's run: artifacts and the shortcut verdict's tag go there
        self.probe: ImageSet | None = None
        self.seconds = 0.0  # total time spent explaining (the benchmark reads it)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # On every rank, before training: failing later on rank 0 alone would leave the others
        # waiting in the metrics broadcast.
        size = pl_module.input_size
        check_grid(size, size, self.settings.aopc.region, self.settings.aopc.steps)
        if trainer.is_global_zero:
            dm = trainer.datamodule
            self.probe = sample_images(pl_module, dm.split_table("val"), self.settings.probe_per_class, self.seed, dm.data)

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        return epoch % self.settings.every_n_epochs == 0 or epoch >= (trainer.max_epochs or 0)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if not self._due(trainer):
            # callback_metrics keeps an earlier epoch's values; dropped, so that this epoch is not
            # recorded (best/explain/*, a sweep objective) with explanations it did not compute.
            for key in [k for k in trainer.callback_metrics if k.startswith("explain/")]:
                del trainer.callback_metrics[key]
            return
        metrics: dict[str, float] | None = None
        if trainer.is_global_zero:
            metrics = self._explain_and_log(trainer, pl_module)
        metrics = trainer.strategy.broadcast(metrics, src=0)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})

    def _explain_and_log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        done = explain_image_set(pl_module, self.probe, self.settings, self.seed)
        # What explaining costs, so a user can weigh every_n_epochs / probe_per_class against it.
        metrics = done.metrics | {"explain/seconds": done.seconds}
        self.seconds += done.seconds
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        sink = self.sink_of(trainer) if self.sink_of is not None else None
        if sink is not None:
            sink.log_objects(done.artifacts(), f"explain/epoch_{trainer.current_epoch:03d}")
        if done.alarm_tags:
            if done.explanation.verdict.alarm:
                console.verdict(f"epoch {trainer.current_epoch}: {done.explanation.verdict.sentence()}", alarm=True)
            if sink is not None:
                sink.set_tags(done.alarm_tags)
        return metrics
