"""How alike two sets of heatmaps are, image by image: Spearman rank correlation and SSIM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cxrlab.callbacks.explanations.display import minmax

# scikit-image's structural_similarity defaults for 2-D float images with data_range=1.
WINDOW = 7
K1 = 0.01
K2 = 0.03


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation [N] of maps a and b [N, h, w]; tied pixels share their average rank."""
    _check_pair(a, b)
    return _pearson(_ranks(a.flatten(1)), _ranks(b.flatten(1)))


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean structural similarity [N] of maps a and b [N, h, w], each min-max scaled to [0, 1] first."""
    _check_pair(a, b)
    if min(a.shape[-2:]) < WINDOW:
        raise ValueError(f"maps: SSIM needs maps of at least {WINDOW}x{WINDOW}, got {tuple(a.shape[-2:])}; upsample them")
    x, y = minmax(a.double())[:, None], minmax(b.double())[:, None]
    n = WINDOW * WINDOW
    unbiased = n / (n - 1)  # scikit-image's use_sample_covariance=True

    def local_mean(t: Tensor) -> Tensor:
        # Only windows wholly inside the map: scikit-image pads by reflection but then crops
        # exactly those border windows away before averaging.
        return F.avg_pool2d(t, WINDOW, stride=1)

    mx, my = local_mean(x), local_mean(y)
    vx = unbiased * (local_mean(x * x) - mx * mx)
    vy = unbiased * (local_mean(y * y) - my * my)
    cxy = unbiased * (local_mean(x * y) - mx * my)
    c1, c2 = K1**2, K2**2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean((1, 2, 3))


def _ranks(rows: Tensor) -> Tensor:
    """1-based ranks within each row of [N, F], ties given the mean of the positions they span."""
    ranked = []
    for row in rows.double():
        _, inverse, counts = torch.unique(row, sorted=True, return_inverse=True, return_counts=True)
        last = counts.cumsum(0)
        ranked.append(((2 * last - counts + 1).double() / 2)[inverse])
    return torch.stack(ranked)


def _pearson(x: Tensor, y: Tensor) -> Tensor:
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    norm = (x.square().sum(1) * y.square().sum(1)).sqrt()
    # A constant map ranks no pixel above another, so it agrees with nothing: 0, not scipy's NaN.
    # That way a method whose maps go blank under randomisation counts as changed, and means stay defined.
    return torch.where(norm > 0, (x * y).sum(1) / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"maps: need two sets of the same shape [N, h, w], got {tuple(a.shape)} and {tuple(b.shape)}")
