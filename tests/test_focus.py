"""Focus ratio of heatmap mass inside a mask: hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from cxrlab.callbacks.explanations.focus import (
    body_mask,
    border_mask,
    corner_mask,
    focus_summary,
    mask_focus,
    region_focus,
)


def _mask(n: int = 8) -> torch.Tensor:
    mask = torch.zeros(1, n, n, dtype=torch.bool)
    mask[0, :2, :] = True  # area share 2/8 = 1/4
    return mask


def test_all_mass_inside_gives_inverse_area_share() -> None:
    heat = torch.zeros(1, 8, 8)
    heat[0, 0, 3] = 5.0
    heat[0, 1, 6] = 1.0
    torch.testing.assert_close(mask_focus(heat, _mask()), torch.tensor([4.0]))


def test_uniform_heatmap_is_one() -> None:
    torch.testing.assert_close(mask_focus(torch.full((1, 8, 8), 0.3), _mask()), torch.tensor([1.0]))


def test_all_mass_outside_is_zero() -> None:
    heat = torch.zeros(1, 8, 8)
    heat[0, 5:, :] = 2.0
    assert mask_focus(heat, _mask()).tolist() == [0.0]


def test_partial_mass_by_hand() -> None:
    # Inside 3 of 4 units of mass over a quarter of the image: (3/4) / (1/4) = 3.
    heat = torch.zeros(1, 8, 8)
    heat[0, 0, 0] = 3.0
    heat[0, 7, 7] = 1.0
    torch.testing.assert_close(mask_focus(heat, _mask().float()), torch.tensor([3.0]))


def test_empty_heatmap_or_mask_is_nan() -> None:
    heat = torch.stack([torch.zeros(8, 8), torch.ones(8, 8), -torch.ones(8, 8)])
    masks = torch.cat([_mask(), torch.zeros(1, 8, 8, dtype=torch.bool), _mask()])
    out = mask_focus(heat, masks)
    assert out.isnan().tolist() == [True, True, True]  # negatives clamp to an empty map


def test_low_resolution_heatmap_is_upsampled() -> None:
    # 2x2 map with mass only in the top row; mask = top half of a 16x16 image. Bilinear upsampling
    # mixes the rows near the middle, so the ratio is below the ideal 2 but well above 1.
    heat = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    mask = torch.zeros(1, 16, 16)
    mask[0, :8] = 1
    value = mask_focus(heat[:, None], mask[:, None]).item()
    # Rows 0-3 keep 1, rows 4-7 fall 0.9375..0.5625 in 0.125 steps, mirrored below the middle.
    inside = 4 + (0.9375 + 0.8125 + 0.6875 + 0.5625)
    outside = 0.4375 + 0.3125 + 0.1875 + 0.0625
    assert value == pytest.approx(2 * inside / (inside + outside))


def test_mismatched_counts_raise() -> None:
    with pytest.raises(ValueError, match="masks"):
        mask_focus(torch.ones(2, 4, 4), _mask())


def test_summary_counts_nans() -> None:
    summary = focus_summary(torch.tensor([1.0, math.nan, 3.0, 2.0, math.nan, 6.0]))
    assert summary == {"mean": 3.0, "median": 2.5, "n": 4.0, "n_nan": 2.0}
    empty = focus_summary(torch.tensor([math.nan]))
    assert math.isnan(empty["mean"]) and math.isnan(empty["median"]) and empty["n_nan"] == 1.0


# ---------------------------------------------------------------- mask-free regions


def test_border_and_corner_masks_by_hand() -> None:
    # 10x10, width 0.2 -> a 2-pixel frame: 100 - 6*6 = 64 pixels; corners 0.3 -> four 3x3 squares.
    border = border_mask((10, 10), 0.2)
    assert int(border.sum()) == 64 and not border[2:8, 2:8].any() and border[:2].all()
    corners = corner_mask((10, 10), 0.3)
    assert int(corners.sum()) == 36
    assert corners[:3, :3].all() and corners[7:, 7:].all() and not corners[3:7].any()


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A 20x20 image: dark air around a bright 12x12 body at rows/cols 4..15 (area share 0.36),
    a small bright marker in the top-left corner outside it, and a heatmap with hand-placed mass."""
    image = torch.full((1, 1, 20, 20), 0.05)
    image[0, 0, 4:16, 4:16] = 0.8
    image[0, 0, 8:12, 6:10] = 0.3  # a darker 'lung' inside the body: a hole the mask must fill
    image[0, 0, 1:3, 1:3] = 1.0  # the marker: bright, but not the body
    heat = torch.zeros(1, 20, 20)
    heat[0, 0, 0] = 3.0  # top-left pixel: border, corner, outside the body
    heat[0, 10, 10] = 1.0  # inside the body, away from border and corners
    return image, heat


def test_body_mask_fills_the_lungs_and_drops_the_marker() -> None:
    image, _ = _scene()
    body = body_mask(image)[0]
    expected = torch.zeros(20, 20, dtype=torch.bool)
    expected[4:16, 4:16] = True
    assert torch.equal(body, expected)


def test_region_focus_by_hand() -> None:
    image, heat = _scene()
    out = region_focus(heat, image, border_width=0.1, corner_size=0.1)
    # Mass share 3/4 in each region. Border: 2-pixel frame of 20 = 1 - 16^2/400 = 0.36 of the
    # area; corners: four 2x2 squares = 0.04; outside the body: 1 - 0.36 = 0.64.
    torch.testing.assert_close(out["border_focus"], torch.tensor([0.75 / 0.36]))
    torch.testing.assert_close(out["corner_focus"], torch.tensor([0.75 / 0.04]))
    torch.testing.assert_close(out["outside_body_focus"], torch.tensor([0.75 / 0.64]))


def test_region_focus_of_a_uniform_map_is_one() -> None:
    image, _ = _scene()
    out = region_focus(torch.ones(1, 5, 5), image, border_width=0.1, corner_size=0.25)
    for value in out.values():
        torch.testing.assert_close(value, torch.tensor([1.0]))
