"""Temperature scaling (Guo et al. 2017) and the expected calibration error."""

from __future__ import annotations

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


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| of the top class, averaged over equal-width confidence bins
    weighted by their share of images."""
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(conf.double(), edges[1:-1], right=True)  # bin b holds (edge b, edge b+1]
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap = (correct[inside].mean() - conf[inside].double().mean()).abs()
            total += float(gap) * float(inside.double().mean())
    return total
