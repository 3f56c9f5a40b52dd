"""Heatmap methods as registered explain.methods choices, and the one call that runs any of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cxrlab.config import METHODS, ExplainConfig
from cxrlab.lightning_modules.eval_mode import eval_mode

# (model, layer, images [N, ch, H, W] in [0, 1], *, batch_size, **options) -> raw maps [N, C or 1, h, w]
MapFn = Callable[..., torch.Tensor]
# explain settings -> the keyword arguments a method reads from them (its own sub-section's values)
Options = Callable[[ExplainConfig], dict[str, Any]]


def _no_options(settings: ExplainConfig) -> dict[str, Any]:
    """What a method without settings of its own reads from explain settings: nothing."""
    return {}


@dataclass(frozen=True)
class HeatmapMethod:
    """One explain.methods choice: how its maps are computed, and whether there is one per class."""

    name: str
    compute: MapFn
    per_class: bool  # a map per class (Grad-CAM); False: one class-agnostic map (activation)
    options: Options = _no_options


def heatmap_method(
    name: str, *, per_class: bool = True, options: Options = _no_options
) -> Callable[[MapFn], MapFn]:
    """Decorator: register a function as the heatmap method `name` (an explain.methods value).

    The function takes (model, layer, images, *, batch_size, **options(settings)) and returns raw
    maps [N, C, h, w] (per_class) or [N, 1, h, w]; `options` picks its keyword arguments from the
    explain settings, so its maths takes plain numbers that still come from the typed config.
    --help, validation and every explanation pass then know it.
    """

    def add(compute: MapFn) -> MapFn:
        METHODS.add(name, HeatmapMethod(name, compute, per_class, options))
        return compute

    return add


def first_per_class(methods: list[str]) -> str | None:
    """The first of `methods` that gives a map per class (what eigen-heatmaps read), else None."""
    return next((m for m in methods if METHODS.get(m).per_class), None)


def heatmaps(
    model: nn.Module,
    layer: str | nn.Module,
    images: torch.Tensor,
    method: str,
    batch_size: int = 32,
    settings: ExplainConfig | None = None,
) -> torch.Tensor:
    """Raw maps [N, C or 1, h, w] of the registered `method` under `settings` (None: the defaults)."""
    chosen: HeatmapMethod = METHODS.get(method)
    options = chosen.options(settings or ExplainConfig())
    # Every method runs in eval mode and may build a graph, also at epoch end, where Lightning
    # holds inference mode (its tensors cannot join a graph, so the images are copied out of it).
    with eval_mode(model), torch.inference_mode(False):
        x = images.clone() if images.is_inference() else images
        return chosen.compute(model, layer, x, batch_size=batch_size, **options)


def of_class(maps: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The map of one class per image ([N, h, w]); class-agnostic maps pass through."""
    if maps.shape[1] == 1:
        return maps[:, 0]
    return maps[torch.arange(len(maps)), torch.as_tensor(classes, dtype=torch.long)]
