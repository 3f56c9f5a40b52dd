"""What a model's logits mean: one probability distribution over classes, or one probability per finding."""

from __future__ import annotations

import torch
from torch import nn

MULTILABEL_THRESHOLD = 0.5  # a finding counts as predicted from this probability on (before per-label tuning)


def is_multilabel(model: nn.Module) -> bool:
    """Whether `model` outputs independent findings (a CXRClassifier trained with data.task multilabel)."""
    return bool(getattr(model, "multilabel", False))


def output_probs(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes, or a sigmoid per finding for a multi-label model; keeps the dtype."""
    return logits.sigmoid() if is_multilabel(model) else logits.softmax(dim=1)


def explained_classes(
    probs: torch.Tensor, labels: torch.Tensor, multilabel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the class each image's heatmap explains, whether the model is right about it): the predicted
    class and prediction == label; multi-label, the image's (positive) label and whether its
    probability reaches MULTILABEL_THRESHOLD."""
    labels = labels.to(probs.device)
    if multilabel:
        return labels, probs.gather(1, labels.clamp(min=0)[:, None])[:, 0] >= MULTILABEL_THRESHOLD
    pred = probs.argmax(dim=1)
    return pred, pred == labels
