"""ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods"): remove regions and impute them from their neighbours, so the perturbed image stays
close to the data and the drop in probability measures the explanation, not the artefact.

Removed pixels become the weighted mean of their 8 neighbours (direct 1, diagonal 1/2, the
weights of neighbours outside the image dropped), solved jointly over all removed pixels as one
sparse linear system, plus Gaussian noise of std `noise` in [0, 1] pixel space. At step k the
top-k (MoRF) or bottom-k (LeRF) regions of AOPC's grid, ranked by heatmap mass, are removed; f is
the softmax probability of the explained class. gap = mean of LeRF - MoRF over images and steps
1..steps: a faithful map loses the class fast when its relevant regions go and slowly otherwise.

Differences from pytorch-grad-cam's ROAD (`pytorch_grad_cam.metrics.road`, 1.5.x):
- it removes by pixel percentile: percentile p removes the pixels with cam >= percentile(cam, p)
  (MoRF) or with 1 - cam >= percentile(1 - cam, p) (LeRF). At region=1 our step k removes the k
  most (least) relevant pixels, the same set when k is that count and no pixel ties the
  threshold (tied pixels: they remove all, we break ties by grid order);
- it scores f(x_k) - f(x_0); we keep f(x_k), so column 0 gives the difference;
- its ROADCombined is (LeRF - MoRF) / 2 averaged over percentiles: half our gap on the same sets;
- it solves in float32 with the global random generator; we solve in float64 with a seeded one.
Neither clips the noisy imputation to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.linalg import spsolve
from torch import nn

from cxrlab.callbacks.explanations.aopc import DEFAULTS, grid_regions
from cxrlab.callbacks.explanations.sanity.curves import Pass, check_inputs, probability_curves

# (row offset, column offset, weight); only the ratio matters, each pixel being a weighted mean
NEIGHBOURS = tuple(
    (dr, dc, 1.0 if dr == 0 or dc == 0 else 0.5)
    for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc
)


@dataclass
class RoadResult:
    """ROAD curves: probability of the explained class after k = 0..steps regions are imputed."""

    morf: np.ndarray  # [N, steps + 1], most relevant regions removed first
    lerf: np.ndarray  # [N, steps + 1], least relevant regions removed first

    @property
    def mean_morf(self) -> np.ndarray:
        """Mean MoRF curve over images, [steps + 1]."""
        return self.morf.mean(axis=0)

    @property
    def mean_lerf(self) -> np.ndarray:
        """Mean LeRF curve over images, [steps + 1]."""
        return self.lerf.mean(axis=0)

    @property
    def gap(self) -> float:
        """Mean of LeRF - MoRF over images and steps 1..steps (higher = more faithful)."""
        return float((self.lerf - self.morf)[:, 1:].mean())


def noisy_linear_impute(
    images: torch.Tensor, removed: torch.Tensor, noise: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Images [N, ch, H, W] whose removed pixels [N, 1, H, W] are imputed from their neighbours."""
    n, _, height, width = images.shape
    if removed.shape != (n, 1, height, width):
        raise ValueError(f"removed must be [N={n}, 1, {height}, {width}], got "
                         f"{tuple(removed.shape)}")
    gone = removed[:, 0].bool().cpu()
    if gone.flatten(1).all(dim=1).any():
        raise ValueError("removed covers a whole image: no pixel is left to impute from")
    out = images.detach().to("cpu", torch.float64, copy=True)
    for image, mask in zip(out, gone, strict=True):
        if not mask.any():
            continue
        filled = torch.from_numpy(_solve(image.numpy(), mask.numpy()))
        if noise:
            filled += noise * torch.randn(filled.shape, generator=generator, dtype=torch.float64)
        image[:, mask] = filled
    return out.to(images.device, images.dtype)


def _solve(values: np.ndarray, gone: np.ndarray) -> np.ndarray:
    """Linear imputation [ch, n] of the n pixels gone [H, W] of values [ch, H, W]."""
    height, width = gone.shape
    rows, cols = np.nonzero(gone)
    n = len(rows)
    unknown = np.full(gone.shape, -1)
    unknown[rows, cols] = np.arange(n)
    # Equation of pixel p: (sum of its neighbours' weights) x_p - sum over removed neighbours
    # w_q x_q = sum over kept neighbours w_q v_q.
    weight_sum = np.zeros(n)
    rhs = np.zeros((n, len(values)))
    coupled = []
    for dr, dc, weight in NEIGHBOURS:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        eq, r, c = np.flatnonzero(inside), r[inside], c[inside]
        weight_sum[eq] += weight
        var = unknown[r, c]
        kept = var < 0
        # each equation appears at most once per offset, so fancy-index += does not lose sums
        rhs[eq[kept]] += weight * values[:, r[kept], c[kept]].T
        coupled.append((eq[~kept], var[~kept], np.full(int((~kept).sum()), -weight)))
    eqs, variables, coefs = (np.concatenate(part) for part in zip(*coupled, strict=True))
    system = sparse.coo_matrix((coefs, (eqs, variables)), shape=(n, n)) + sparse.diags(weight_sum)
    return np.asarray(spsolve(system.tocsc(), rhs)).reshape(n, -1).T


def road_steps(height: int, width: int, region: int, steps: int) -> int:
    """The AOPC grid's steps, less one where they would remove every region (ROAD imputes from what is left)."""
    return min(steps, grid_regions(height, width, region) - 1)


def road_curves(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
    classes: torch.Tensor | None = None, *, region: int = DEFAULTS.region,
    steps: int = DEFAULTS.steps, noise: float = 0.01, seed: int = 0, batch_size: int = 64,
) -> RoadResult:
    """ROAD MoRF and LeRF curves of maps [N, h, w] for model on images [N, ch, H, W] in [0, 1]."""
    check_inputs(images, maps, classes, region, steps, batch_size)
    n_regions = grid_regions(*images.shape[-2:], region)
    if steps >= n_regions:
        raise ValueError(f"steps={steps}: ROAD imputes from what is left, so steps must be below "
                         f"the {n_regions} regions of {region} px")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    generator = torch.Generator().manual_seed(seed)

    def impute(x: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        copies = x[:, None].expand(-1, changed.shape[1], -1, -1, -1).flatten(0, 1)
        filled = noisy_linear_impute(copies, changed.flatten(0, 1), noise, generator)
        return filled.unflatten(0, changed.shape[:2])

    morf, lerf = probability_curves(model, images, maps, classes,
                                    (Pass(impute), Pass(impute, least_first=True)),
                                    region, steps, batch_size)
    return RoadResult(morf=morf, lerf=lerf)
