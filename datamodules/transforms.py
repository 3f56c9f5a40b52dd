"""Image transforms on [1, H, W] float tensors in [0, 1] (torchvision v2)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from cxrlab.config import AugmentConfig


def crop_margin(x: torch.Tensor, frac: float) -> torch.Tensor:
    """Cut `frac` of the height and width from every border (burnt-in text and markers)."""
    if frac <= 0:
        return x
    h, w = x.shape[-2:]
    dh, dw = int(round(h * frac)), int(round(w * frac))
    return x[..., dh : h - dh, dw : w - dw]


class CropMargin(torch.nn.Module):
    """crop_margin as a transform step (a module-level class, so loader workers can unpickle it)."""

    def __init__(self, frac: float) -> None:
        super().__init__()
        self.frac = frac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return crop_margin(x, self.frac)


class Clamp01(torch.nn.Module):
    """Clamp to [0, 1]: resampling and jitter overshoot slightly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


# Transforms are v2.Compose pipelines of module-level classes, never closures: DataLoader workers
# receive them pickled under spawn and forkserver (Python 3.14's default on Linux).
def eval_transform(size: int, margin: float = 0.0) -> v2.Compose:
    """Deterministic preprocessing shared by validation, test, evaluate, explain and predict."""
    return v2.Compose([CropMargin(margin), v2.Resize((size, size), antialias=True), Clamp01()])


def train_transform(size: int, margin: float, augment: AugmentConfig) -> v2.Compose:
    """eval_transform followed by the configured random augmentation."""
    steps: list[Callable] = []
    a = augment
    if a.rotate or a.shift or a.zoom or a.shear:
        steps.append(
            v2.RandomAffine(
                degrees=a.rotate,
                translate=(a.shift, a.shift) if a.shift else None,
                scale=(1 - a.zoom, 1 + a.zoom) if a.zoom else None,
                shear=a.shear or None,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    if a.brightness or a.contrast:
        steps.append(v2.ColorJitter(brightness=a.brightness or None, contrast=a.contrast or None))
    if a.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if a.vflip:
        steps.append(v2.RandomVerticalFlip())
    if not steps:
        return eval_transform(size, margin)
    return v2.Compose([eval_transform(size, margin), *steps, Clamp01()])
