"""Temperature scaling (Guo et al. 2017) and the expected calibration error."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) on held-out labels."""
    logits, labels = logits.detach().double(), labels.detach().long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def nll() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.inference_mode(False), torch.enable_grad():
        opt.step(nll)
    t = float(log_t.detach().exp())
    # Separable training data drives T towards 0; keep it in a range that still orders classes.
    return min(max(t, 0.05), 20.0)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> tuple[np.ndarray, ...]:
    """Per equal-width confidence bin (lo, hi] of the top class: image count, mean confidence and
    accuracy (NaN in empty bins)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # Right-closed bins (Guo et al. 2017); a confidence of exactly 0 joins the first bin.
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return count, mean_conf, accuracy


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: |accuracy - confidence| of the top class per bin, weighted by the bin's share."""
    count, mean_conf, accuracy = reliability_bins(np.asarray(probs, np.float64), np.asarray(labels), n_bins)
    filled = count > 0
    return float((count[filled] / count.sum() * np.abs(accuracy - mean_conf)[filled]).sum())
