"""Occlusion sensitivity (batched, against a per-window loop; a known decisive square; coverage; config
checks) and the model-free edge control (a hand Sobel; blind to the model)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmarks.reference_occlusion import reference_occlusion
from cxrlab.callbacks.explanations.methods import heatmaps
from cxrlab.callbacks.explanations.occlusion import check_occlusion, window_starts
from cxrlab.config import METHODS, ConfigError, ExplainConfig, OcclusionConfig, load_config
from cxrlab.experiments.training.checks import check_config


def tiny_cnn(seed: int, classes: int = 3) -> nn.Module:
    """A random CNN on grey images."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, classes)
    )


class SquareModel(nn.Module):
    """Two classes; the class-1 logit grows with the mean intensity of rows 8:16, columns 16:24."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 5.0 * (x[:, :, 8:16, 16:24].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([-z, z], dim=1)


def occlusion(model: nn.Module, images: torch.Tensor, window: int, stride: int, batch_size: int = 32) -> torch.Tensor:
    settings = ExplainConfig(occlusion=OcclusionConfig(window=window, stride=stride))
    return heatmaps(model, model, images, "occlusion", batch_size, settings)


def test_methods_are_registered() -> None:
    assert METHODS.get("occlusion").per_class and not METHODS.get("edge").per_class


def test_batched_occlusion_equals_the_per_window_loop() -> None:
    model = tiny_cnn(0)
    images = torch.rand(3, 1, 21, 19, generator=torch.Generator().manual_seed(1))  # 21, 19: no multiple of 4
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    maps = occlusion(model, images, window=6, stride=4, batch_size=7)
    windows = len(window_starts(21, 6, 4)) * len(window_starts(19, 6, 4))
    assert maps.shape == (3, 3, 21, 19) and (maps >= 0).all()
    assert len(calls) == math.ceil(3 / 7) + math.ceil(3 * windows / 7)  # batched: no forward per window
    torch.testing.assert_close(maps, reference_occlusion(model, images, 6, 4), rtol=0, atol=1e-6)


def test_the_decisive_square_lights_up() -> None:
    images = 0.3 + 0.4 * torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    images[:, :, 8:16, 16:24] = 0.9
    maps = occlusion(SquareModel(), images, window=8, stride=4)
    # Hiding the square only lowers class 1: class 0 never loses, and windows off the square change nothing.
    assert (maps[:, 0] == 0).all()
    touched = torch.zeros(32, 32, dtype=torch.bool)
    touched[4:20, 12:28] = True  # the windows overlapping the square start at rows 4, 8, 12, columns 12, 16, 20
    assert (maps[:, 1][:, touched] > 0).all() and (maps[:, 1][:, ~touched] == 0).all()
    square = maps[:, 1, 8:16, 16:24]
    assert (square.amax((1, 2)) == maps[:, 1].amax((1, 2))).all()
    assert (square.mean((1, 2)) > 2 * maps[:, 1][:, touched].mean(1)).all()


def test_every_pixel_is_hidden_when_the_stride_fits_the_window() -> None:
    for size in (8, 13, 32):
        for window in range(1, size + 1):
            for stride in range(1, window + 1):
                starts = window_starts(size, window, stride)
                hidden = torch.zeros(size, dtype=torch.bool)
                for s in starts:
                    hidden[s:s + window] = True
                assert hidden.all() and starts[0] == 0 and starts[-1] == size - window


@pytest.mark.parametrize(
    ("window", "stride", "message"),
    [
        (40, 8, "explain.occlusion.window=40 is larger than the 32 px input; lower explain.occlusion.window"),
        (16, 20, "explain.occlusion.stride=20 leaves pixels between windows of 16 px uncovered; use a stride of at most 16"),
    ],
)
def test_check_occlusion_names_the_key_and_the_fix(window: int, stride: int, message: str) -> None:
    with pytest.raises(ValueError) as e:
        check_occlusion(32, 32, window, stride)
    assert str(e.value) == message


def test_a_window_wider_than_the_input_fails_the_method() -> None:
    with pytest.raises(ValueError, match=r"^explain.occlusion.window=16 is larger than the 8 px input"):
        heatmaps(tiny_cnn(0), "", torch.rand(1, 1, 8, 8), "occlusion")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("explain.occlusion.window", 80, "explain.occlusion.window=80 is larger than the 64 px input"),
        ("explain.occlusion.stride", 20, "explain.occlusion.stride=20 leaves pixels between windows of 16 px"),
    ],
)
def test_config_load_refuses_occlusion_that_does_not_fit(key: str, value: int, message: str) -> None:
    # Also with the epoch-end explanations off: the sanity checks run occlusion by default.
    cfg = load_config(overrides={"data.image_size": 64, "explain.enabled": False, key: value})
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert str(e.value).startswith(f"config: {message}") and "\n" not in str(e.value)


def test_edge_is_a_hand_sobel_with_mirrored_borders() -> None:
    step = torch.zeros(1, 1, 5, 6)
    step[..., 3:] = 1.0
    ramp = 0.1 * torch.arange(6.0).expand(1, 1, 5, 6)
    expected_step = torch.zeros(5, 6)
    expected_step[:, 2:4] = 4.0  # (1 + 2 + 1) x the unit step, either side of it; mirrored rows add nothing
    expected_ramp = torch.full((5, 6), 0.8)  # (1 + 2 + 1) x the 0.2 difference across each pixel
    expected_ramp[:, [0, -1]] = 0.0  # mirrored at the border, the ramp turns back: no edge there
    for image, expected in ((step, expected_step), (ramp, expected_ramp)):
        maps = heatmaps(tiny_cnn(0), "", image, "edge")
        assert maps.shape == (1, 1, 5, 6)
        torch.testing.assert_close(maps[0, 0], expected, rtol=0, atol=1e-6)


def test_edge_ignores_the_model() -> None:
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    assert torch.equal(heatmaps(tiny_cnn(0), "", images, "edge"), heatmaps(tiny_cnn(1, 5), "", images, "edge"))
