"""Display helpers for heatmaps: upsampling, min-max scaling, colour overlays and grids."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from torch import Tensor

ArrayLike = np.ndarray | Tensor


def upsample(maps: Tensor, size: tuple[int, int] | int) -> Tensor:
    """Bilinearly resize maps [..., h, w] to [..., H, W]."""
    if maps.ndim < 2:
        raise ValueError(f"maps: need at least 2 dims [..., h, w], got shape {tuple(maps.shape)}")
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(out_hw) != 2 or min(out_hw) < 1:
        raise ValueError(f"size: need a positive int or (H, W), got {size!r}")
    if tuple(maps.shape[-2:]) == out_hw:
        return maps.float()
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    # align_corners=False is the half-pixel convention of cv2.resize and PIL.
    out = F.interpolate(flat, size=out_hw, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *out_hw)


def minmax(maps: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale every map [..., h, w] to [0, 1] by its own min and max (constant maps become 0)."""
    lo = maps.amin((-2, -1), keepdim=True)
    span = maps.amax((-2, -1), keepdim=True) - lo
    return (maps - lo) / span.clamp_min(eps)


def overlay(
    image: ArrayLike,
    heatmap: ArrayLike,
    alpha: float = 0.4,
    cmap: str = "jet",
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Blend the colour-mapped min-max heatmap over the image, as uint8 RGB [H, W, 3]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: need a blend weight in [0, 1], got {alpha}")
    rgb = _as_rgb(image)
    height, width = rgb.shape[:2]
    heat = torch.from_numpy(_as_numpy(heatmap)).float()
    while heat.ndim > 2 and heat.shape[0] == 1:  # not squeeze(): a 1x1 map must stay 2-D
        heat = heat[0]
    if heat.ndim != 2:
        raise ValueError(f"heatmap: need one map [h, w], got shape {tuple(heat.shape)}")
    # Normalised over the whole map, so a mask shows how strong the inside is relative to all of it.
    scaled = minmax(upsample(heat, (height, width))).numpy()
    colours = matplotlib.colormaps[cmap](scaled)[..., :3]
    blended = (1.0 - alpha) * rgb + alpha * colours
    if mask is not None:
        inside = _as_numpy(mask).squeeze().astype(bool)
        if inside.shape != (height, width):
            raise ValueError(
                f"mask: need shape {(height, width)} like the image, got {inside.shape}"
            )
        blended = np.where(inside[..., None], blended, rgb)
    return _to_uint8(blended)


def heatmap_grid(
    images: ArrayLike | Sequence[ArrayLike],
    heatmaps: ArrayLike | Sequence[ArrayLike],
    titles: Sequence[str] | None = None,
    alphas: Sequence[float] = (0.4,),
    masks: ArrayLike | Sequence[ArrayLike] | None = None,
    flagged: Sequence[bool] | None = None,
    cmap: str = "jet",
) -> Figure:
    """One row per image: the original, then an overlay per alpha; each row's title (true and
    predicted class, probability, ...) above its image, a red frame and FLAGGED on rows `flagged`
    marks, and a colour bar that says what the colours mean."""
    n = len(images)
    if len(heatmaps) != n:
        raise ValueError(f"heatmaps: need one per image ({n}), got {len(heatmaps)}")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles: need one per image ({n}), got {len(titles)}")
    if masks is not None and len(masks) != n:
        raise ValueError(f"masks: need one per image ({n}), got {len(masks)}")
    if flagged is not None and len(flagged) != n:
        raise ValueError(f"flagged: need one per image ({n}), got {len(flagged)}")
    if not alphas:
        raise ValueError("alphas: need at least one blend weight")
    cols = 1 + len(alphas)
    # A bare Figure (no pyplot) is not registered globally, so callbacks never leak figures.
    fig = Figure(figsize=(2.4 * cols + 0.6, 2.6 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for row in range(n):
        mask = None if masks is None else masks[row]
        mark = flagged is not None and flagged[row]
        axes[row, 0].imshow(_to_uint8(_as_rgb(images[row])))
        title = "" if titles is None else titles[row]
        axes[row, 0].set_title(("FLAGGED  " if mark else "") + title, loc="left", fontsize=8,
                               color="#b71c1c" if mark else "black", fontweight="bold" if mark else "normal")
        for col, alpha in enumerate(alphas, start=1):
            axes[row, col].imshow(overlay(images[row], heatmaps[row], alpha=alpha, mask=mask, cmap=cmap))
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
            if mark:
                for spine in ax.spines.values():
                    spine.set_color("#b71c1c")
                    spine.set_linewidth(3)
    for col, alpha in enumerate(alphas, start=1):
        axes[-1, col].set_xlabel(f"heatmap at {alpha:.0%} opacity", fontsize=8)
    axes[-1, 0].set_xlabel("image", fontsize=8)
    bar = fig.colorbar(ScalarMappable(cmap=cmap), ax=axes, shrink=min(1.0, 2.0 / n + 0.3), pad=0.02)
    bar.set_label("heatmap, relative to its own maximum", fontsize=8)
    bar.set_ticks([0, 0.5, 1], labels=["none", "half", "strongest"])
    return fig


def _as_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _as_rgb(image: ArrayLike) -> np.ndarray:
    """Gray or RGB image, channels first or last, in [0, 1] -> float [H, W, 3]."""
    img = _as_numpy(image).astype(np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image: need [H, W], [1|3, H, W] or [H, W, 1|3], got {img.shape}")
    return np.clip(img, 0.0, 1.0)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
