"""The edge map: a built-in negative control among the heatmap methods.

It is the gradient magnitude of the grey input and does not depend on the model at all, so it must
fail model randomisation: randomising the weights cannot change it. Beside the real methods it
shows the reader what failing a sanity check looks like (and edge maps often look convincing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxrlab.callbacks.explanations.methods import heatmap_method

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@heatmap_method("edge", per_class=False)
def edge_map(model: nn.Module, layer: nn.Module | str, images: Tensor, *, batch_size: int) -> Tensor:
    """Sobel gradient magnitude [N, 1, H, W] of the grey input; it ignores the model, layer and batch size."""
    grey = images.float().mean(1, keepdim=True)
    # Mirrored borders continue the image, so its edge is not mistaken for a step to black.
    padded = F.pad(grey, (1, 1, 1, 1), mode="reflect")
    kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None].to(grey.device)  # [2, 1, 3, 3]: d/dx, d/dy
    return F.conv2d(padded, kernels).square().sum(1, keepdim=True).sqrt()
