"""Focus: how much of a heatmap's mass lies inside a mask, relative to the mask's area."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from callbacks.display import upsample


def mask_focus(heatmaps: Tensor, masks: Tensor) -> Tensor:
    """Focus [N]: heatmap mass share inside the mask over its area share; NaN if either is empty."""
    if heatmaps.ndim == 4 and heatmaps.shape[1] == 1:
        heatmaps = heatmaps[:, 0]
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if heatmaps.ndim != 3 or masks.ndim != 3:
        raise ValueError(
            f"heatmaps/masks: need [N, h, w] and [N, H, W], got {tuple(heatmaps.shape)} "
            f"and {tuple(masks.shape)}"
        )
    if heatmaps.shape[0] != masks.shape[0]:
        raise ValueError(
            f"masks: need one mask per heatmap ({heatmaps.shape[0]}), got {masks.shape[0]}"
        )
    # Bilinear overshoot is impossible, but raw maps from other methods may carry negatives.
    heat = upsample(heatmaps, tuple(masks.shape[-2:])).clamp_min(0).double()
    inside = (masks.to(heat.device) != 0).double()
    mass_share = (heat * inside).sum((1, 2)) / heat.sum((1, 2))
    area_share = inside.mean((1, 2))
    # 0/0 for an empty heatmap and x/0 for an empty mask are both reported as NaN (not inf), so
    # callers can count undefined cases with isnan.
    focus = torch.where(area_share > 0, mass_share / area_share, math.nan)
    return focus.float()


def focus_summary(values: Tensor) -> dict[str, float]:
    """Mean and median over defined (non-NaN) focus values, with n defined and n_nan undefined."""
    flat = values.detach().flatten().double().cpu()
    defined = flat[~flat.isnan()]
    n = defined.numel()
    return {
        "mean": defined.mean().item() if n else math.nan,
        "median": defined.quantile(0.5).item() if n else math.nan,
        "n": float(n),
        "n_nan": float(flat.numel() - n),
    }
