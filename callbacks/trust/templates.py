"""Heatmap templates (Lucas et al. 2021): the average Grad-CAM of each class over its correctly
classified images, and how closely one image's map follows its predicted class's template."""

from __future__ import annotations

import torch
from torch import Tensor


def _unit(maps: Tensor) -> Tensor:
    """Flattened maps centred and scaled to unit norm, so a dot product is Pearson's r."""
    flat = maps.flatten(1).double()
    flat = flat - flat.mean(1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def class_templates(maps: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """Per-class average map [K, h, w] (zeros for a class without images)."""
    out = torch.zeros(n_classes, *maps.shape[1:], dtype=torch.float64)
    for k in range(n_classes):
        if (labels == k).any():
            out[k] = maps[labels == k].double().mean(0)
    return out.float()


def template_corr(maps: Tensor, templates: Tensor, classes: Tensor) -> Tensor:
    """Pearson's r [N] of each map with the template of its class (NaN for a flat map or template)."""
    a, b = _unit(maps), _unit(templates[classes])
    flat = (maps.flatten(1).std(1, correction=0) == 0) | (templates[classes].flatten(1).std(1, correction=0) == 0)
    return torch.where(flat, torch.nan, (a * b).sum(1)).float()


def held_out_corr(maps: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """Each map's r with its class template built without it (leave-one-out), so the range of
    typical values is not flattered by the map's own share of the template."""
    sums = class_templates(maps, labels, n_classes).double() * torch.bincount(labels, minlength=n_classes)[:, None, None]
    counts = torch.bincount(labels, minlength=n_classes)[labels].double()
    others = (sums[labels] - maps.double()) / (counts - 1).clamp_min(1)[:, None, None]
    corr = template_corr(maps, others.float(), torch.arange(len(maps)))
    return torch.where(counts > 1, corr, torch.nan)
