"""Display helpers: resizing, min-max scaling, overlays and grids."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cxrlab.callbacks.explanations.display import heatmap_grid, minmax, overlay, upsample  # noqa: E402


def test_upsample_shapes_and_values() -> None:
    maps = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    out = upsample(maps, (6, 8))
    assert out.shape == (2, 3, 6, 8) and out.dtype == torch.float32
    assert upsample(maps[0, 0], 4).shape == (4, 4)
    # Half-pixel bilinear: a constant map stays constant, corners keep their source values.
    torch.testing.assert_close(upsample(torch.full((3, 3), 2.5), 7), torch.full((7, 7), 2.5))
    assert out[1, 2, 0, 0] == maps[1, 2, 0, 0] and out[1, 2, -1, -1] == maps[1, 2, -1, -1]
    # Midway between columns 0 and 1 of [[0, 1], [2, 3]] in a 4-wide output: 0.25 and 0.75 mix.
    torch.testing.assert_close(upsample(maps[0, 0], (2, 4))[0], torch.tensor([0, 0.25, 0.75, 1]))


def test_minmax_per_map() -> None:
    maps = torch.stack([torch.tensor([[1.0, 3.0], [2.0, 5.0]]), torch.full((2, 2), 4.0)])
    out = minmax(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))  # constant map: no range to stretch
    rand = minmax(torch.randn(3, 2, 5, 5))
    assert torch.equal(rand.amin((-2, -1)), torch.zeros(3, 2))
    assert torch.equal(rand.amax((-2, -1)), torch.ones(3, 2))


@pytest.mark.parametrize(
    "image", [np.full((8, 8), 0.5), torch.full((1, 8, 8), 0.5), np.full((8, 8, 3), 0.5)]
)
def test_overlay_blends_colour_map(image) -> None:
    heat = torch.zeros(4, 4)
    heat[0, 0] = 1.0
    out = overlay(image, heat, alpha=0.2, cmap="gray")
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    # gray colormap: min-max 1 -> white, 0 -> black; blend 0.8 * 0.5 + 0.2 * colour.
    assert out[0, 0].tolist() == [153, 153, 153]  # 0.6 * 255
    assert out[-1, -1].tolist() == [102, 102, 102]  # 0.4 * 255


def test_overlay_mask_keeps_plain_image_outside() -> None:
    gray = np.linspace(0, 1, 64).reshape(8, 8)
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    out = overlay(gray, torch.rand(3, 3), alpha=0.5, mask=mask)
    plain = np.round(gray * 255).astype(np.uint8)
    for channel in range(3):
        assert np.array_equal(out[~mask, channel], plain[~mask])
    assert not np.array_equal(out[mask, 0], plain[mask])
    with pytest.raises(ValueError, match="mask"):
        overlay(gray, torch.rand(3, 3), mask=np.ones((4, 4), dtype=bool))


def test_overlay_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.zeros((8, 8)), torch.rand(2, 2), alpha=1.5)
    with pytest.raises(ValueError, match="heatmap"):
        overlay(np.zeros((8, 8)), torch.rand(2, 2, 2))
    with pytest.raises(ValueError, match="image"):
        overlay(np.zeros((8, 8, 5)), torch.rand(2, 2))


def test_heatmap_grid_layout() -> None:
    images = torch.rand(3, 1, 16, 16)
    heat = torch.rand(3, 4, 4)
    masks = torch.rand(3, 16, 16) > 0.5
    fig = heatmap_grid(images, heat, titles=["a", "b", "c"], alphas=(0.2, 0.5), masks=masks, flagged=[False, True, False])
    assert isinstance(fig, Figure)
    *axes, bar = fig.get_axes()
    assert len(axes) == 3 * 3 and bar.get_ylabel() == "heatmap, relative to its own maximum"
    assert [ax.get_xlabel() for ax in axes[6:]] == ["image", "heatmap at 20% opacity", "heatmap at 50% opacity"]
    assert [axes[i].get_title(loc="left") for i in (0, 3, 6)] == ["a", "FLAGGED  b", "c"]
    shown = axes[4].get_images()[0].get_array()
    expected = overlay(images[1], heat[1], alpha=0.2, mask=masks[1])
    assert np.array_equal(np.asarray(shown), expected)
    with pytest.raises(ValueError, match="heatmaps"):
        heatmap_grid(images, heat[:2])
