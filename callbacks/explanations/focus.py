"""Focus: how much of a heatmap's mass lies inside a mask, relative to the mask's area."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from cxrlab.callbacks.explanations.display import upsample


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


# ---------------------------------------------------------------- mask-free regions
# Where burnt-in text, markers and rulers sit on any radiograph: no lung mask needed.


def _side(fraction: float, pixels: int) -> int:
    """A fraction of an image side in whole pixels, at least one."""
    return max(1, round(fraction * pixels))


def border_mask(size: tuple[int, int], width: float) -> Tensor:
    """The outer frame [H, W] (bool) whose width is `width` times each side."""
    h, w = size
    bh, bw = _side(width, h), _side(width, w)
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[bh : h - bh, bw : w - bw] = False
    return mask


def corner_mask(size: tuple[int, int], side: float) -> Tensor:
    """The four corner squares [H, W] (bool), each `side` times the image's sides."""
    h, w = size
    ch, cw = _side(side, h), _side(side, w)
    mask = torch.zeros(h, w, dtype=torch.bool)
    for rows in (slice(0, ch), slice(h - ch, h)):
        for cols in (slice(0, cw), slice(w - cw, w)):
            mask[rows, cols] = True
    return mask


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    """The intensity threshold that maximises the between-class variance of `values`."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(float)
    mass = np.cumsum(hist * centres)
    total, total_mass = weight[-1], mass[-1]
    below_mean = mass / np.maximum(weight, 1)
    above_mean = (total_mass - mass) / np.maximum(total - weight, 1)
    between = weight * (total - weight) * (below_mean - above_mean) ** 2
    return float(centres[int(np.argmax(between))])


def body_mask(images: Tensor) -> Tensor:
    """Body masks [N, H, W] (bool) from the images alone: a two-level Otsu threshold of the smoothed
    image, the largest bright component, holes (the dark lungs) filled, an opening for the edges."""
    from scipy import ndimage

    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"images: need [N, H, W] or [N, 1, H, W], got {tuple(images.shape)}")
    out = []
    for img in images.detach().float().cpu().numpy():
        size = min(img.shape)
        # Film noise would otherwise speckle the threshold near the skin line.
        smooth = ndimage.gaussian_filter(img, sigma=max(0.5, size / 128))
        # Otsu splits soft tissue from the dark lungs; Otsu again below that threshold splits the
        # air around the body from the lungs and the thin tissue at the skin line.
        upper = _otsu(smooth)
        bright = smooth > _otsu(smooth[smooth <= upper])
        labels, n = ndimage.label(bright)
        if n == 0:
            out.append(np.zeros_like(bright))
            continue
        # The body is the largest bright blob; burnt-in markers and text are small ones beside it.
        largest = labels == 1 + int(np.argmax(ndimage.sum_labels(bright, labels, range(1, n + 1))))
        body = ndimage.binary_fill_holes(largest)
        r = max(1, size // 64)
        body = ndimage.binary_opening(body, structure=np.ones((2 * r + 1, 2 * r + 1)))
        out.append(body)
    return torch.from_numpy(np.stack(out))


def region_focus(
    heatmaps: Tensor, images: Tensor, border_width: float, corner_size: float
) -> dict[str, Tensor]:
    """Mask-free focus [N] of each heatmap in the image border, the corners and outside the body."""
    n, size = images.shape[0], tuple(images.shape[-2:])
    heatmaps = upsample(heatmaps[:, 0] if heatmaps.ndim == 4 else heatmaps, size)  # once, not per mask
    border = border_mask(size, border_width).expand(n, *size)
    corners = corner_mask(size, corner_size).expand(n, *size)
    return {
        "border_focus": mask_focus(heatmaps, border),
        "corner_focus": mask_focus(heatmaps, corners),
        "outside_body_focus": mask_focus(heatmaps, ~body_mask(images)),
    }
