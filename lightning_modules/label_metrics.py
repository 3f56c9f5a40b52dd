"""Multi-label loss and scores, where a NaN target (blank, or uncertain under U-Ignore) counts for nothing."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score


def masked_bce(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None, smoothing: float = 0.0
) -> torch.Tensor:
    """Mean binary cross-entropy over the known (non-NaN) targets only; 0 when none is known."""
    known = ~torch.isnan(targets)
    y = targets.nan_to_num(0.0)
    if smoothing:
        y = y * (1 - smoothing) + 0.5 * smoothing
    terms = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight, reduction="none")
    return (terms * known).sum() / known.sum().clamp(min=1)


def label_scores(probs: np.ndarray, targets: np.ndarray, labels: list[str], threshold: float = 0.5) -> dict[str, float]:
    """Per-label AUROC, AUPRC and F1 (at `threshold`), their macro means over the labels where both
    values occur, and the micro AUROC over every known cell. Keys: auroc/<label>, macro_auroc, ..."""
    out: dict[str, float] = {}
    per: dict[str, list[float]] = {"auroc": [], "auprc": [], "f1": []}
    for j, name in enumerate(labels):
        known = ~np.isnan(targets[:, j])
        y, p = targets[known, j], probs[known, j]
        if y.size == 0 or y.min() == y.max():
            continue  # one value only: no ranking to score (the macro means leave the label out)
        scores = {
            "auroc": float(roc_auc_score(y, p)),
            "auprc": float(average_precision_score(y, p)),
            "f1": float(f1_score(y, p >= threshold, zero_division=0)),
        }
        for key, value in scores.items():
            out[f"{key}/{name}"] = value
            per[key].append(value)
    for key, values in per.items():
        out[f"macro_{key}"] = float(np.mean(values)) if values else math.nan
    known = ~np.isnan(targets)
    y, p = targets[known], probs[known]
    out["micro_auroc"] = float(roc_auc_score(y, p)) if y.size and y.min() != y.max() else math.nan
    return out


def f1_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The probability cut (predict present at score >= t) with the highest F1; 0.5 without both values."""
    if positive.all() or not positive.any():
        return 0.5
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order].astype(float)
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    last = np.r_[s[1:] != s[:-1], True]  # a cut falls between distinct scores only
    f1 = 2 * tp / (2 * tp + fp + (y.sum() - tp))
    best = int(np.argmax(np.where(last, f1, -1.0)))
    return float(s[best])


def f1_thresholds(probs: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per label, the F1-best cut over its known (non-NaN) targets (how `predict` decides what is present)."""
    out = []
    for j in range(probs.shape[1]):
        known = ~np.isnan(targets[:, j])
        out.append(f1_threshold(probs[known, j], targets[known, j] == 1))
    return out
