"""Focus ratio of heatmap mass inside a mask: hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from callbacks.focus import focus_summary, mask_focus


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
