"""Every sanity check of every heatmap method on one image set: model randomisation (cascading and
independent), ROAD, deletion and insertion, and the pointing game where lesion masks exist, with the
model-free edge control checked beside the real methods."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cxrlab.callbacks.explanations.explanation import target_layer
from cxrlab.callbacks.explanations.sanity.deletion import DeletionInsertion, deletion_insertion
from cxrlab.callbacks.explanations.sanity.localisation import (
    lesion_mean,
    pointing_game,
    relevance_rank_accuracy,
)
from cxrlab.callbacks.explanations.sanity.randomisation import (
    StageResult,
    method_explainer,
    passes,
    randomisation,
    randomisation_stages,
)
from cxrlab.callbacks.explanations.sanity.road import RoadResult, road_curves, road_steps
from cxrlab.config import ExplainConfig
from cxrlab.lightning_modules.eval_mode import eval_mode
from cxrlab.lightning_modules.probabilities import explained_classes, is_multilabel, output_probs

CONTROL = "edge"  # the model-free negative control: it must fail model randomisation


@dataclass
class MethodSanity:
    """One method's sanity checks on an image set."""

    method: str
    maps: torch.Tensor  # [N, h, w] the trained model's maps
    cascade: list[StageResult]
    independent: list[StageResult]
    passes: bool
    bound: float
    road: RoadResult
    curves: DeletionInsertion
    pointing_game: float | None  # hit rate over the images with a lesion; None without masks
    rank_accuracy: float | None
    seconds_per_image: float

    @property
    def control(self) -> bool:
        return self.method == CONTROL

    def numbers(self) -> dict[str, Any]:
        """The method's numbers as plain data (sanity.json)."""
        return {
            "passes": self.passes,
            "control": self.control,
            "bound": self.bound,
            "cascading": [{"stage": r.name, "spearman": r.spearman, "ssim": r.ssim} for r in self.cascade],
            "independent": [{"stage": r.name, "spearman": r.spearman, "ssim": r.ssim} for r in self.independent],
            "road_morf": self.road.mean_morf.tolist(),
            "road_lerf": self.road.mean_lerf.tolist(),
            "road_gap": self.road.gap,
            "deletion_auc": self.curves.deletion_auc,
            "insertion_auc": self.curves.insertion_auc,
            "pointing_game": self.pointing_game,
            "relevance_rank_accuracy": self.rank_accuracy,
            "seconds_per_image": self.seconds_per_image,
        }

    def verdict(self) -> str:
        """One line: passes or fails model randomisation, and at which stage."""
        half = self.cascade[: (len(self.cascade) + 1) // 2]
        note = " (the model-free control: failing is what it is for)" if self.control else ""
        below = next((r for r in half if r.spearman < self.bound), None)
        if below is not None:
            return (f"{self.method}: passes model randomisation: rank correlation {below.spearman:.2f} < "
                    f"{self.bound:g} once the network is randomised down to {below.name}{note}")
        low = min(r.spearman for r in half)
        return (f"{self.method}: FAILS model randomisation: rank correlation still {low:.2f} >= "
                f"{self.bound:g} with the top half of the network randomised{note}")


def checked_methods(settings: ExplainConfig) -> list[str]:
    """explain.sanity.methods, and the edge control after them."""
    methods = list(settings.sanity.methods)
    return methods if CONTROL in methods else [*methods, CONTROL]


def sanity_checks(
    model: nn.Module,
    images: torch.Tensor,
    settings: ExplainConfig,
    lesion_masks: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: Callable[[str], None] | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, MethodSanity]:
    """Check every method of `checked_methods(settings)` on images [N, 1, H, W] in [0, 1], each map
    of its image's predicted class (multi-label: of its finding, `labels`); `progress` hears each
    method's name once it is checked."""
    with eval_mode(model), torch.no_grad():
        probs = torch.cat([output_probs(model, model(b)) for b in images.split(batch_size)])
    preds = explained_classes(probs, labels if labels is not None else probs.argmax(1), is_multilabel(model))[0]
    layer = target_layer(model, settings)
    stages = randomisation_stages(model, settings.sanity.stages)
    a = settings.aopc
    out = {}
    for method in checked_methods(settings):
        explain = method_explainer(method, layer, batch_size, settings)
        start = time.perf_counter()
        maps = explain(model, images, preds)
        seconds = (time.perf_counter() - start) / len(images)
        # The trained model's maps serve both runs, and ROAD, deletion and localisation below.
        cascade = randomisation(model, images, preds, explain, stages, seed, reference=maps)
        independent = randomisation(model, images, preds, explain, stages, seed, cascading=False, reference=maps)
        road = road_curves(model, images, maps, preds, region=a.region, steps=road_steps(*images.shape[-2:], a.region, a.steps),
                           seed=seed, batch_size=batch_size)
        curves = deletion_insertion(model, images, maps, preds, region=a.region, steps=a.steps, batch_size=batch_size)
        hits = rank = None
        if lesion_masks is not None:
            hits = lesion_mean(pointing_game(maps, lesion_masks), lesion_masks)
            rank = lesion_mean(relevance_rank_accuracy(maps, lesion_masks), lesion_masks)
        out[method] = MethodSanity(
            method, maps.detach().cpu(), cascade, independent, passes(cascade, settings.sanity.bound), settings.sanity.bound,
            road, curves, hits, rank, seconds,
        )
        if progress is not None:
            progress(method)
    return out
