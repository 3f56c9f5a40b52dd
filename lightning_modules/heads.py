"""Classification heads that sit on a backbone's feature maps, one builder per model.head choice."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from experiments.config import Head, did_you_mean


def _mlp(features: int, hidden: int, dropout: float, n_classes: int) -> list[nn.Module]:
    return [nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)]


def _gap_linear(channels: int, n_classes: int, hidden: int, pool: int, dropout: float,
                feature_hw: tuple[int, int] | None) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, n_classes))


def _gap_mlp(channels: int, n_classes: int, hidden: int, pool: int, dropout: float,
             feature_hw: tuple[int, int] | None) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *_mlp(channels, hidden, dropout, n_classes))


def _maxpool_mlp(channels: int, n_classes: int, hidden: int, pool: int, dropout: float,
                 feature_hw: tuple[int, int] | None) -> nn.Sequential:
    if feature_hw is None:
        raise ValueError("maxpool-mlp needs the feature-map size (feature_hw)")
    h, w = feature_hw
    if h < pool or w < pool:
        raise ValueError(
            f"model.pool={pool} is larger than the {h}x{w} feature map; lower model.pool or raise data.image_size"
        )
    flat = channels * (h // pool) * (w // pool)
    return nn.Sequential(nn.MaxPool2d(pool, pool), nn.Flatten(), *_mlp(flat, hidden, dropout, n_classes))


HeadBuilder = Callable[[int, int, int, int, float, "tuple[int, int] | None"], nn.Sequential]
HEADS: dict[Head, HeadBuilder] = {"gap-linear": _gap_linear, "gap-mlp": _gap_mlp, "maxpool-mlp": _maxpool_mlp}


def build_head(
    kind: str,
    channels: int,
    n_classes: int,
    hidden: int = 256,
    pool: int = 4,
    dropout: float = 0.0,
    feature_hw: tuple[int, int] | None = None,
) -> nn.Sequential:
    """The model.head `kind` on [B, channels, h, w] feature maps -> [B, n_classes] logits."""
    if kind not in HEADS:
        raise ValueError(f"model.head={kind!r} is not one of {', '.join(HEADS)}{did_you_mean(kind, HEADS)}")
    return HEADS[kind](channels, n_classes, hidden, pool, dropout, feature_hw)
