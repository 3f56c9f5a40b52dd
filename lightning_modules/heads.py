"""Classification heads that sit on a backbone's feature maps, one registered builder per model.head."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cxrlab.config import HEADS, ModelConfig

# (model settings, feature channels, classes, feature-map size or None) -> the head.
HeadBuilder = Callable[[ModelConfig, int, int, "tuple[int, int] | None"], nn.Sequential]


def _mlp(features: int, model: ModelConfig, n_classes: int) -> list[nn.Module]:
    return [nn.Linear(features, model.hidden), nn.ReLU(), nn.Dropout(model.dropout), nn.Linear(model.hidden, n_classes)]


def check_pool(pool: int, feature_hw: tuple[int, int], of: str = "") -> None:
    """Fail, naming the keys, when the maxpool-mlp head's pool exceeds the feature map (`of` says whose)."""
    h, w = feature_hw
    if h < pool or w < pool:
        raise ValueError(
            f"model.pool={pool} is larger than the {h}x{w} feature map{of}; lower model.pool or raise data.image_size"
        )


@HEADS.register("gap-linear")
def gap_linear(model: ModelConfig, channels: int, n_classes: int, feature_hw: tuple[int, int] | None) -> nn.Sequential:
    """Global average pooling, then one linear layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(model.dropout), nn.Linear(channels, n_classes))


@HEADS.register("gap-mlp")
def gap_mlp(model: ModelConfig, channels: int, n_classes: int, feature_hw: tuple[int, int] | None) -> nn.Sequential:
    """Global average pooling, then Dense(model.hidden) and Dense(classes)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *_mlp(channels, model, n_classes))


@HEADS.register("maxpool-mlp")
def maxpool_mlp(model: ModelConfig, channels: int, n_classes: int, feature_hw: tuple[int, int] | None) -> nn.Sequential:
    """MaxPool(model.pool), Flatten, Dense(model.hidden), Dense(classes): keeps where a feature sits."""
    if feature_hw is None:
        raise ValueError("maxpool-mlp needs the feature-map size (feature_hw)")
    check_pool(model.pool, feature_hw)
    h, w = feature_hw
    flat = channels * (h // model.pool) * (w // model.pool)
    return nn.Sequential(nn.MaxPool2d(model.pool, model.pool), nn.Flatten(), *_mlp(flat, model, n_classes))


def build_head(
    model: ModelConfig, channels: int, n_classes: int, feature_hw: tuple[int, int] | None = None
) -> nn.Sequential:
    """The model.head of `model` on [B, channels, h, w] feature maps -> [B, n_classes] logits."""
    builder: HeadBuilder = HEADS.get(model.head)
    return builder(model, channels, n_classes, feature_hw)
