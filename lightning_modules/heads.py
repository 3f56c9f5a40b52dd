"""Classification heads that sit on a backbone's feature maps."""

from __future__ import annotations

from torch import nn


def build_head(
    kind: str,
    channels: int,
    n_classes: int,
    hidden: int = 256,
    pool: int = 4,
    dropout: float = 0.0,
    feature_hw: tuple[int, int] | None = None,
) -> nn.Sequential:
    """gap-linear | gap-mlp | maxpool-mlp on [B, channels, h, w] feature maps -> [B, n_classes]."""
    if kind == "gap-linear":
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, n_classes)
        )
    if kind == "gap-mlp":
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )
    if kind == "maxpool-mlp":
        if feature_hw is None:
            raise ValueError("maxpool-mlp needs the feature-map size (feature_hw)")
        h, w = feature_hw
        if h < pool or w < pool:
            raise ValueError(
                f"model.pool={pool} is larger than the {h}x{w} feature map; "
                "lower model.pool or raise data.image_size"
            )
        flat = channels * (h // pool) * (w // pool)
        return nn.Sequential(
            nn.MaxPool2d(pool, pool),
            nn.Flatten(),
            nn.Linear(flat, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )
    raise ValueError(f"model.head={kind!r}; choose gap-linear, gap-mlp or maxpool-mlp")
