"""Image transforms on [1, H, W] float tensors in [0, 1] (torchvision v2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2


def crop_margin(x: torch.Tensor, frac: float) -> torch.Tensor:
    """Cut `frac` of the height and width from every border (burnt-in text and markers)."""
    if frac <= 0:
        return x
    h, w = x.shape[-2:]
    dh, dw = int(round(h * frac)), int(round(w * frac))
    return x[..., dh : h - dh, dw : w - dw]


def eval_transform(size: int, margin: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Deterministic preprocessing shared by validation, test, evaluate, explain and predict."""
    resize = v2.Resize((size, size), antialias=True)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return resize(crop_margin(x, margin)).clamp_(0.0, 1.0)

    return apply


def train_transform(size: int, margin: float, augment: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """eval_transform followed by the configured random augmentation."""
    steps: list[Callable] = []
    a = augment
    if a["rotate"] or a["shift"] or a["zoom"] or a["shear"]:
        steps.append(
            v2.RandomAffine(
                degrees=a["rotate"],
                translate=(a["shift"], a["shift"]) if a["shift"] else None,
                scale=(1 - a["zoom"], 1 + a["zoom"]) if a["zoom"] else None,
                shear=a["shear"] or None,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    if a["brightness"] or a["contrast"]:
        steps.append(v2.ColorJitter(brightness=a["brightness"] or None, contrast=a["contrast"] or None))
    if a["hflip"]:
        steps.append(v2.RandomHorizontalFlip())
    if a["vflip"]:
        steps.append(v2.RandomVerticalFlip())
    base = eval_transform(size, margin)
    aug = v2.Compose(steps) if steps else None

    def apply(x: torch.Tensor) -> torch.Tensor:
        x = base(x)
        return aug(x).clamp_(0.0, 1.0) if aug is not None else x

    return apply
