"""Inputs that are clearly no chest film of a phantom training set, for the trust model's tests:
photographs, noise, blank and text images, and phantom films rotated or inverted."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # the trust tests' phantom size
FOREIGN = 12  # inputs of each foreign kind


def _text(i: int) -> np.ndarray:
    img = Image.new("L", (SIZE, SIZE), 255)
    draw = ImageDraw.Draw(img)
    for row in range(6):
        draw.text((2, 2 + 10 * row), f"page {i} line {row}", fill=0)
    return np.asarray(img, np.float32) / 255


def _natural() -> list[np.ndarray]:
    """scikit-image's sample photographs (shipped with it), grey, at the phantom's size."""
    import skimage.data as sd

    photos = [sd.camera(), sd.astronaut(), sd.coffee(), sd.chelsea(), sd.rocket(), sd.moon(), sd.coins(),
              sd.page(), sd.brick(), sd.grass(), sd.gravel(), sd.clock()]
    grey = [np.asarray(p, np.float32).mean(2) if np.ndim(p) == 3 else np.asarray(p, np.float32) for p in photos]
    return [np.asarray(Image.fromarray(g).resize((SIZE, SIZE)), np.float32) / 255 for g in grey]


def foreign_inputs(fresh: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Each foreign kind's inputs at SIZE; `fresh` are phantom films of that size the model never saw."""
    rng = np.random.default_rng(0)
    return {
        "natural photographs": _natural(),
        "uniform noise": [rng.uniform(0, 1, (SIZE, SIZE)).astype(np.float32) for _ in range(FOREIGN)],
        "blank": [np.full((SIZE, SIZE), v, np.float32) for v in np.linspace(0, 1, FOREIGN)],
        "rendered text": [_text(i) for i in range(FOREIGN)],
        "phantom rotated 90°": [np.rot90(a).copy() for a in fresh[:FOREIGN]],
        "phantom inverted": [1 - a for a in fresh[:FOREIGN]],
    }
