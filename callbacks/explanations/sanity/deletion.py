"""Deletion and insertion (Petsiuk et al. 2018, RISE) over AOPC's region grid.

Deletion blacks out (0 in [0, 1] pixel space, as RISE) the regions in decreasing heatmap mass;
insertion starts from a Gaussian blur of the image (kernel 11 px, sigma 5 px) and puts the
original regions back in the same order. f is the softmax probability of the explained class
after k = 0..steps regions. The AUC is the trapezoid area over the share of the steps done,
k / steps in [0, 1], so it is the curve's mean height: lower deletion and higher insertion AUC
mean a more faithful map. RISE changes every pixel by the end; here the curve stops after
`steps` regions, and k / steps is the fraction of the image only when steps covers the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from cxrlab.callbacks.explanations.aopc import DEFAULTS
from cxrlab.callbacks.explanations.sanity.curves import Pass, check_inputs, probability_curves

BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


@dataclass
class DeletionInsertion:
    """Deletion and insertion curves: probability of the explained class after k regions."""

    deletion: np.ndarray  # [N, steps + 1], k most relevant regions blacked out
    insertion: np.ndarray  # [N, steps + 1], k most relevant regions restored into the blur

    @property
    def deletion_auc(self) -> float:
        """Mean deletion AUC over images (lower = more faithful)."""
        return float(auc(self.deletion).mean())

    @property
    def insertion_auc(self) -> float:
        """Mean insertion AUC over images (higher = more faithful)."""
        return float(auc(self.insertion).mean())


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area [N] under curves [N, steps + 1] over k / steps in [0, 1]."""
    return (curves[:, 1:] + curves[:, :-1]).mean(axis=1) / 2


def _delete(x: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    return torch.where(changed, 0.0, x[:, None])


def _insert(x: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    blurred = gaussian_blur(x, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    return torch.where(changed, x[:, None], blurred[:, None])


def deletion_insertion(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
    classes: torch.Tensor | None = None, *, region: int = DEFAULTS.region,
    steps: int = DEFAULTS.steps, batch_size: int = 64,
) -> DeletionInsertion:
    """Deletion and insertion curves of maps [N, h, w] for model on [0, 1] images [N, ch, H, W]."""
    check_inputs(images, maps, classes, region, steps, batch_size)
    deletion, insertion = probability_curves(model, images, maps, classes,
                                             (Pass(_delete), Pass(_insert)), region, steps,
                                             batch_size)
    return DeletionInsertion(deletion=deletion, insertion=insertion)
