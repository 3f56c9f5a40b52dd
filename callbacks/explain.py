"""ExplainCallback: explanations of a fixed validation probe set at validation epoch end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.explanations.explain_set import (
    check_aopc_grid,
    explain_images,
    explanation_artifacts,
    explanation_metrics,
)
from callbacks.explanations.shortcut import TAG
from datamodules.images import Decoding
from datamodules.probe import ImageSet, load_image_set, stratified_sample


class ExplainCallback(L.Callback):
    """Heatmaps, eigen-heatmaps, AOPC, focus and the shortcut alarm on a stratified validation probe set.

    Rank 0 computes and writes (metrics to the loggers, artifacts under explain/epoch_NNN/ of the
    MLflow run); every rank joins the broadcast of the metrics, so callback_metrics (and thus
    checkpointing, early stopping or a sweep objective on explain/*) agree across ranks.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        seed: int = 0,
        sink: Callable[[L.Trainer, str, dict[str, Any]], None] | None = None,
        tagger: Callable[[L.Trainer, dict[str, str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.seed = seed
        self.sink = sink  # writes {file name: Figure | DataFrame | bytes} under a run folder
        self.tagger = tagger  # sets run tags (the shortcut verdict of the latest explained epoch)
        self.probe: ImageSet | None = None
        self.seconds = 0.0  # total time spent explaining (the benchmark reads it)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        a = self.settings["aopc"]
        check_aopc_grid(pl_module.input_size, a["region"], a["steps"])
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        table = stratified_sample(dm.split_table("val"), self.settings["probe_per_class"], self.seed)
        self.probe = load_image_set(
            table, pl_module.classes, pl_module.input_size, dm.cfg["crop_margin"], Decoding.from_data(dm.cfg)
        )

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        return epoch % self.settings["every_n_epochs"] == 0 or epoch >= (trainer.max_epochs or 0)

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
        p = self.probe
        start = time.perf_counter()
        es = explain_images(
            pl_module, p.images, p.labels, pl_module.classes, self.settings,
            lung_masks=p.lung_masks, lesion_masks=p.lesion_masks, seed=self.seed,
        )
        metrics = explanation_metrics(es)
        # What explaining costs, so a user can weigh every_n_epochs / probe_per_class against it.
        metrics["explain/seconds"] = time.perf_counter() - start
        self.seconds += metrics["explain/seconds"]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        if self.sink is not None:
            self.sink(trainer, f"explain/epoch_{trainer.current_epoch:03d}", explanation_artifacts(es))
        if es.verdict is not None and es.verdict.n_judged:
            if es.verdict.alarm:
                rank_zero_warn(f"epoch {trainer.current_epoch}: {es.verdict.sentence()}")
            if self.tagger is not None:
                self.tagger(trainer, {TAG: "yes" if es.verdict.alarm else "no"})
        return metrics
