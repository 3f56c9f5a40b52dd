"""The reference AOPC: a per-image, per-step loop, one forward pass per perturbed image.

Written for clarity, independently of cxrlab's batched AOPC; the tests check cxrlab against it
and `benchmarks.explain_speed --only aopc` times cxrlab against it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def reference_aopc(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, heatmaps: torch.Tensor,
    region: int, steps: int, replacement: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[np.ndarray, np.ndarray]:
    """(f [n_correct, steps + 1], AOPC curve [steps + 1]): the most relevant regions of each
    correctly classified image take `replacement(image)`'s pixels, one region per step."""
    height, width = images.shape[-2:]
    boxes = [(r, c) for r in range(0, height, region) for c in range(0, width, region)]
    rows = []
    with torch.no_grad():
        for x, y, h in zip(images, labels, heatmaps, strict=True):
            p0 = model(x[None]).softmax(dim=1)[0]
            cls = int(p0.argmax())
            if cls != int(y):
                continue
            up = F.interpolate(h[None, None].double(), size=(height, width), mode="bilinear",
                               align_corners=False)[0, 0]
            mass = [float(up[r:r + region, c:c + region].sum()) for r, c in boxes]
            ranked = sorted(range(len(boxes)), key=lambda i: -mass[i])
            perturbed = replacement(x)
            xk, fs = x.clone(), [float(p0[cls])]
            for k in range(steps):
                r, c = boxes[ranked[k]]
                xk[:, r:r + region, c:c + region] = perturbed[:, r:r + region, c:c + region]
                fs.append(float(model(xk[None]).softmax(dim=1)[0, cls]))
            rows.append(fs)
    f = np.array(rows)
    curve = np.array([(f[:, :1] - f[:, :L + 1]).sum(1).mean() / (L + 1) for L in range(steps + 1)])
    return f, curve
