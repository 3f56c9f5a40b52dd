"""What explaining a set of images computes: heatmaps of every configured method, eigen-heatmaps,
AOPC, focus (lung, lesion, border, corners, outside the body) and the shortcut verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cxrlab.callbacks.explanations.aopc import aopc_with_baseline
from cxrlab.callbacks.explanations.display import upsample
from cxrlab.callbacks.explanations.eigen import EigenResult, eigen_heatmaps
from cxrlab.callbacks.explanations.focus import mask_focus, region_focus
from cxrlab.callbacks.explanations.methods import first_per_class, heatmaps, of_class
from cxrlab.callbacks.explanations.sanity.localisation import lesion_mean, pointing_game
from cxrlab.callbacks.explanations.sanity.road import road_curves, road_steps
from cxrlab.callbacks.explanations.shortcut import ShortcutVerdict, shortcut_verdict
from cxrlab.config import ExplainConfig
from cxrlab.lightning_modules.eval_mode import eval_mode
from cxrlab.lightning_modules.probabilities import explained_classes, is_multilabel, output_probs


@dataclass
class ExplanationSet:
    """What explain_images computes for a set of images."""

    classes: list[str]
    images: torch.Tensor  # [N, 1, H, W] in [0, 1]
    labels: torch.Tensor  # [N] true class indices
    probs: torch.Tensor  # [N, K]
    maps: dict[str, torch.Tensor]  # method -> raw maps at layer resolution
    primary: str  # the method AOPC, focus and eigen-heatmaps use
    eigen: EigenResult | None
    aopc: dict[str, Any] | None
    focus: dict[str, torch.Tensor]  # lung_focus, lesion_focus (with masks), border_focus, ...: [N], NaN undefined
    verdict: ShortcutVerdict | None  # None when the alarm is disabled
    sanity: dict[str, float]  # road_gap (explain.road), pointing_game (lesion masks): sweep objectives
    multilabel: bool = False  # each image is one (film, positive finding) pair, explained on that finding

    @property
    def preds(self) -> torch.Tensor:
        """The class each map explains: the predicted one, or (multi-label) the image's finding."""
        return explained_classes(self.probs, self.labels, self.multilabel)[0]


def target_layer(model: nn.Module, settings: ExplainConfig) -> str | nn.Module:
    """The layer heatmaps are taken at: explain.target_layer, else the model's (the registry's)."""
    return settings.target_layer or model.target_layer


def explain_images(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    settings: ExplainConfig,
    layer: str | nn.Module | None = None,
    lung_masks: torch.Tensor | None = None,
    lesion_masks: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 32,
    focus_only: bool = False,
) -> ExplanationSet:
    """Run every configured explanation on images in [0, 1]; `focus_only` skips eigen-heatmaps and
    AOPC (what the shortcut check alone needs)."""
    layer = layer or target_layer(model, settings)
    device = next(model.parameters()).device
    x = images.to(device)
    with eval_mode(model), torch.no_grad():
        probs = torch.cat([output_probs(model, model(b).float()) for b in x.split(batch_size)]).cpu()
    maps = {m: heatmaps(model, layer, x, m, batch_size, settings).cpu() for m in settings.methods}
    primary = settings.methods[0]
    # A multi-label image comes once per positive finding (labels), and each map explains that finding.
    explained, correct = explained_classes(probs, labels, is_multilabel(model))
    focus_maps = of_class(maps[primary], explained)

    eigen = None
    class_method = first_per_class(settings.methods)
    if settings.eigen and class_method is not None and not focus_only:
        display = upsample(maps[class_method], settings.display_size)
        eigen = eigen_heatmaps(display.numpy(), labels.numpy(), classes)

    aopc = None
    a = settings.aopc
    if correct.any() and not focus_only:
        aopc = aopc_with_baseline(
            model, x, labels.to(device), focus_maps.to(device), region=a.region, steps=a.steps,
            perturb=a.perturb, sigma=a.sigma, seed=seed, batch_size=batch_size * 2, random_seeds=a.random_seeds,
        )
    focus = {
        name: mask_focus(focus_maps, masks)
        for name, masks in (("lung_focus", lung_masks), ("lesion_focus", lesion_masks)) if masks is not None
    }
    focus |= region_focus(focus_maps, images.cpu(), settings.border_width, settings.corner_size)
    sanity = {} if focus_only else epoch_sanity(model, x, focus_maps, explained, lesion_masks, settings, seed, batch_size)
    verdict = shortcut_verdict(focus, settings.alarm) if settings.alarm.enabled else None
    return ExplanationSet(
        classes, images.cpu(), labels.cpu(), probs, maps, primary, eigen, aopc, focus, verdict, sanity, is_multilabel(model)
    )


def epoch_sanity(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, preds: torch.Tensor, lesion_masks: torch.Tensor | None,
    settings: ExplainConfig, seed: int, batch_size: int,
) -> dict[str, float]:
    """The sanity numbers cheap enough for every explained epoch: the pointing game where lesion
    masks exist, and the ROAD gap when explain.road is on."""
    out = {}
    hits = lesion_mean(pointing_game(maps, lesion_masks), lesion_masks) if lesion_masks is not None else None
    if hits is not None:
        out["pointing_game"] = hits
    if settings.road:
        a = settings.aopc
        steps = road_steps(*x.shape[-2:], a.region, a.steps)
        road = road_curves(model, x, maps.to(x.device), preds.to(x.device), region=a.region, steps=steps, seed=seed,
                           batch_size=batch_size)
        out["road_gap"] = road.gap
    return out
