"""Occlusion sensitivity: how far each class's probability drops while a square of the input is hidden.

A window of `window` px slides over the image every `stride` px, with one last window flush with the
bottom and right edges, so a stride of at most the window hides every pixel at least once. A pixel's
value for class c is the mean, over the windows hiding it, of max(0, p_c(x) - p_c(x hidden)) with p
the softmax probabilities: only a drop counts, so the map is evidence FOR class c, as Grad-CAM's
ReLU keeps only what raises the class.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cxrlab.callbacks.explanations.methods import heatmap_method
from cxrlab.lightning_modules.eval_mode import eval_mode
from cxrlab.lightning_modules.probabilities import output_probs


def check_occlusion(height: int, width: int, window: int, stride: int) -> None:
    """Fail, naming the config key and the fix, when the windows do not fit or leave pixels unhidden."""
    size = f"{height} px" if height == width else f"{height}x{width} px"
    if window < 1 or stride < 1:
        raise ValueError(f"explain.occlusion: window={window} and stride={stride} must both be >= 1 pixel")
    if window > min(height, width):
        raise ValueError(
            f"explain.occlusion.window={window} is larger than the {size} input; lower explain.occlusion.window"
        )
    if stride > window:
        raise ValueError(
            f"explain.occlusion.stride={stride} leaves pixels between windows of {window} px uncovered; "
            f"use a stride of at most {window}"
        )


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """First pixel of each window along one side: every `stride` px, and one flush with the far edge."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


@heatmap_method(
    "occlusion", options=lambda settings: {"window": settings.occlusion.window, "stride": settings.occlusion.stride}
)
def occlusion_map(
    model: nn.Module,
    layer: nn.Module | str,
    images: Tensor,
    *,
    window: int,
    stride: int,
    batch_size: int,
) -> Tensor:
    """Occlusion maps [N, K, H, W] of every class (`layer` is unused: only the input is hidden)."""
    n, _, height, width = images.shape
    check_occlusion(height, width, window, stride)
    rows = _spans(height, window, stride, images.device)  # [R, H]: which rows each window hides
    cols = _spans(width, window, stride, images.device)  # [Q, W]
    # The image's own mean intensity is a neutral grey: the hidden copy stays close to the images
    # the model saw, so the drop measures lost evidence rather than surprise at a black hole.
    fill = images.mean((1, 2, 3), keepdim=True)
    pairs = torch.arange(n * len(rows) * len(cols), device=images.device)  # (image, row, column) flattened
    with eval_mode(model), torch.no_grad():
        before = torch.cat([_probabilities(model, chunk) for chunk in images.split(batch_size)])
        after = torch.cat([
            _probabilities(model, _hidden(images, fill, rows, cols, chunk)) for chunk in pairs.split(batch_size)
        ])
    image = pairs // (len(rows) * len(cols))
    drops = (before[image] - after).clamp_min(0).view(n, len(rows), len(cols), -1)
    rows, cols = rows.float(), cols.float()
    # Each window is a row span times a column span, so summing its drop over the pixels it hides
    # is two small matrix products, and the count of windows hiding a pixel an outer product.
    total = torch.einsum("nrqk,rh,qw->nkhw", drops, rows, cols)
    return total / torch.outer(rows.sum(0), cols.sum(0))


def _spans(size: int, window: int, stride: int, device: torch.device) -> Tensor:
    starts = torch.tensor(window_starts(size, window, stride), device=device)[:, None]
    pixels = torch.arange(size, device=device)
    return (pixels >= starts) & (pixels < starts + window)


def _hidden(images: Tensor, fill: Tensor, rows: Tensor, cols: Tensor, pairs: Tensor) -> Tensor:
    """Copies of the images of `pairs` with each pair's window set to the image's fill value."""
    per_image = len(rows) * len(cols)
    image, window = pairs // per_image, pairs % per_image
    hide = rows[window // len(cols), :, None] & cols[window % len(cols), None, :]  # [B, H, W]
    return torch.where(hide[:, None], fill[image], images[image])


def _probabilities(model: nn.Module, images: Tensor) -> Tensor:
    return output_probs(model, model(images).float())
