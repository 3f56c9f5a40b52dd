"""The reference occlusion sensitivity: a per-image, per-window loop, one forward pass per hidden copy.

Written for clarity, independently of cxrlab's batched occlusion; the tests check cxrlab against it
and `benchmarks.explain_speed --only occlusion` times cxrlab against it.
"""

from __future__ import annotations

import torch
from torch import nn


def reference_occlusion(model: nn.Module, images: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """Maps [N, K, H, W]: per pixel, the mean over the windows hiding it (filled with the image's
    mean) of each class's probability drop, negative drops counted as 0."""
    height, width = images.shape[-2:]
    rows = sorted({*range(0, height - window + 1, stride), height - window})
    cols = sorted({*range(0, width - window + 1, stride), width - window})
    maps = []
    with torch.no_grad():
        for x in images:
            p0 = model(x[None]).float().softmax(dim=1)[0]
            total = torch.zeros(len(p0), height, width, device=x.device)
            count = torch.zeros(height, width, device=x.device)
            for r in rows:
                for c in cols:
                    hidden = x.clone()
                    hidden[:, r:r + window, c:c + window] = x.mean()
                    p = model(hidden[None]).float().softmax(dim=1)[0]
                    total[:, r:r + window, c:c + window] += (p0 - p).clamp(min=0)[:, None, None]
                    count[r:r + window, c:c + window] += 1
            maps.append(total / count)
    return torch.stack(maps)
