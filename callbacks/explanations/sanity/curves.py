"""Probability curves over AOPC's region grid: the class probability as the k = 0..steps regions
ranked first by heatmap mass are changed, for ROAD and deletion/insertion alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from cxrlab.callbacks.explanations.aopc import (
    SoftmaxForward,
    check_grid,
    perturbation_steps,
    predict_probs,
    region_grid,
)
from cxrlab.callbacks.explanations.display import upsample
from cxrlab.lightning_modules.eval_mode import eval_mode

# (images [g, ch, H, W], changed [g, steps + 1, 1, H, W] bool: the pixels of the regions changed by
# step k) -> the model inputs [g, steps + 1, ch, H, W] of every step.
Compose = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Pass(NamedTuple):
    """One curve: how changed pixels are composed, and whether the least relevant go first."""

    compose: Compose
    least_first: bool = False


def check_inputs(
    images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor | None, region: int,
    steps: int, batch_size: int,
) -> None:
    """Raise ValueError on inconsistent curve arguments."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor [N, ch, H, W], got {images.dtype} "
                         f"{tuple(images.shape)}")
    n, _, height, width = images.shape
    if maps.ndim != 3 or len(maps) != n:
        raise ValueError(f"maps must be [N={n}, h, w] (one map per image), got {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        # NaN would sort first and be changed first: a silently wrong order.
        raise ValueError("maps hold NaN or infinite values; fix the method that made them")
    if classes is not None and (classes.shape != (n,) or classes.is_floating_point()):
        raise ValueError(f"classes must be {n} integer class indices, got {classes.dtype} "
                         f"{tuple(classes.shape)}")
    check_grid(height, width, region, steps)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


@torch.no_grad()
def probability_curves(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor | None,
    passes: Sequence[Pass], region: int, steps: int, batch_size: int,
) -> list[np.ndarray]:
    """Per pass, the probability [N, steps + 1] of classes (default: the predicted ones) after
    the k = 0..steps first-ranked regions of each map [N, h, w] are changed."""
    height, width = images.shape[-2:]
    grid = region_grid(height, width, region)
    most_first = perturbation_steps(upsample(maps, (height, width)), grid, "morf", 0)
    # reversing the rank keeps one ranking helper: least relevant first is most relevant last
    least_first = most_first.shape[1] + 1 - most_first
    with eval_mode(model):
        forward = SoftmaxForward(model, batch_size)
        if classes is None:
            classes = predict_probs(forward, images, batch_size).argmax(dim=1)
        return [
            _curves(forward, images, classes, least_first if p.least_first else most_first, grid,
                    steps, p.compose, batch_size)
            for p in passes
        ]


def _curves(
    forward: SoftmaxForward, images: torch.Tensor, classes: torch.Tensor, step_of: torch.Tensor,
    grid: torch.Tensor, steps: int, compose: Compose, batch_size: int,
) -> np.ndarray:
    """Probability of classes [N] after steps 0..steps of one pass: [N, steps + 1]."""
    device = forward.device
    grid, step_of = grid.to(device), step_of.to(device)
    levels = torch.arange(steps + 1, device=device)
    out = torch.empty(len(images), steps + 1, dtype=torch.float64)
    # Whole images per group, so a composition that works per image (a blur, a solve) runs
    # once per image; the group's images x steps inputs then go through as forward batches.
    group = max(1, batch_size // (steps + 1))
    for start in range(0, len(images), group):
        x = images[start:start + group].to(device)
        step = step_of[start:start + group]
        changed = (step[:, None, :] <= levels[None, :, None])[:, :, grid]
        inputs = compose(x, changed[:, :, None]).flatten(0, 1)
        probs = forward(inputs).reshape(len(x), steps + 1, -1)
        picked = classes[start:start + group].to(device)[:, None, None].expand(-1, steps + 1, 1)
        out[start:start + len(x)] = probs.gather(2, picked)[..., 0].cpu()
    return out.numpy()
