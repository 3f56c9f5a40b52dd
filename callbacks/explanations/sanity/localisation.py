"""Localisation against a ground-truth mask: the pointing game (Zhang et al. 2018) and relevance
rank accuracy (Arras et al. 2022). Maps are upsampled bilinearly to the mask's size first.

Differences from quantus 0.6 (`PointingGame`, `RelevanceRankAccuracy`, their defaults):
- the pointing game counts a hit when any of several tied maxima lies inside the mask, as
  quantus does; an empty mask is a miss here, while quantus writes NaN into its bool array,
  which reads as a hit;
- relevance rank accuracy ranks tied values in pixel order (a stable sort); quantus' unstable
  sort may take other tied pixels. Both give NaN for an empty mask;
- quantus divides maps by their maximum first, which moves neither the maximum nor the ranks.
"""

from __future__ import annotations

import torch

from cxrlab.callbacks.explanations.display import upsample


def _check(maps: torch.Tensor, masks: torch.Tensor) -> None:
    """Raise ValueError unless maps [N, h, w] and masks [N, H, W] pair up."""
    if maps.ndim != 3 or masks.ndim != 3 or len(maps) != len(masks):
        raise ValueError(f"maps [N, h, w] and masks [N, H, W] must pair up, got "
                         f"{tuple(maps.shape)} and {tuple(masks.shape)}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps hold NaN or infinite values; fix the method that made them")


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image [N] bool: does a maximum of its map lie inside its mask?"""
    _check(maps, masks)
    up = upsample(maps, tuple(masks.shape[-2:]))
    peaks = up == up.amax(dim=(-2, -1), keepdim=True)
    return (peaks & masks.bool()).flatten(1).any(dim=1)


def relevance_rank_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image [N]: share of the map's top-K pixels inside the mask, K its pixel count."""
    _check(maps, masks)
    up = upsample(maps, tuple(masks.shape[-2:])).flatten(1)
    inside = masks.bool().flatten(1)
    k = inside.sum(dim=1)
    ranked_inside = inside.gather(1, up.argsort(dim=1, descending=True, stable=True))
    top = torch.arange(up.shape[1], device=up.device)[None] < k[:, None]
    # an empty mask gives 0 / 0 = NaN: no top-K to judge
    return (ranked_inside & top).sum(dim=1).double() / k


def lesion_mean(values: torch.Tensor, masks: torch.Tensor) -> float | None:
    """The mean of per-image `values` over the images with a lesion (a normal film's mask is empty
    and cannot be pointed at); None when no image has one."""
    has = masks.flatten(1).bool().any(1)
    return float(values[has].double().mean()) if has.any() else None
