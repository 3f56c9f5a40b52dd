"""Tests for cxrlab.callbacks.explanations.aopc: MoRF vs random, a reference loop, exclusion, formula, seeding, batching."""

import math
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.reference_aopc import reference_aopc
from cxrlab.callbacks.explanations.aopc import SoftmaxForward, aopc, aopc_with_baseline


class RegionModel(nn.Module):
    """Two classes; the class-1 logit grows with the mean intensity of one known square."""

    def __init__(self, top: int, left: int, size: int, gain: float = 20.0) -> None:
        super().__init__()
        self.box = (slice(top, top + size), slice(left, left + size))
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.gain * (x[:, :, self.box[0], self.box[1]].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([-z, z], dim=1)


class SumModel(nn.Module):
    """Logits [0, sum of pixels]: P(class 1) = sigmoid(sum), known in closed form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.sum(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(s), s], dim=1)


def small_convnet(seed: int = 0) -> nn.Module:
    """A random float64 CNN with three classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    ).double()


def region_data(n: int = 6, seed: int = 0):
    """Images 32x32 with a bright square at rows 8:16, cols 16:24, all labelled 1."""
    gen = torch.Generator().manual_seed(seed)
    images = 0.3 + 0.4 * torch.rand(n, 1, 32, 32, generator=gen)
    images[:, :, 8:16, 16:24] = 0.9
    heatmaps = torch.zeros(n, 32, 32)
    heatmaps[:, 8:16, 16:24] = 1.0  # the perfect explanation: all mass on the decisive square
    return images, torch.ones(n, dtype=torch.long), heatmaps


# noise barely moves a mean-intensity model, so it gets a softer model and a smaller margin
@pytest.mark.parametrize(("perturb", "gain", "margin"), [("zero", 20, 0.5), ("mean", 20, 0.15),
                                                         ("noise", 5, 0.02)])
def test_perfect_heatmap_beats_random_order(perturb, gain, margin):
    images, labels, heatmaps = region_data()
    model = RegionModel(8, 16, 8, gain)
    kwargs = {"region": 8, "steps": 4, "perturb": perturb, "sigma": 0.5}
    morf = aopc(model, images, labels, heatmaps, **kwargs)
    rand = aopc(model, images, labels, heatmaps, order="random", **kwargs)
    assert morf.n_correct == 6
    assert morf.value > rand.value + margin
    if perturb == "zero":  # the square goes dark at step 1: P(class 1) falls from ~1 to ~0
        np.testing.assert_allclose(morf.curve, [0, 1 / 2, 2 / 3, 3 / 4, 4 / 5], atol=1e-3)


def test_zero_perturbation_matches_reference_loop():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(7, 3, 20, 20, generator=gen, dtype=torch.float64)
    heatmaps = torch.rand(7, 5, 5, generator=gen, dtype=torch.float64)
    model = small_convnet()
    labels = model(images).argmax(1)
    labels[2] = (labels[2] + 1) % 3  # one wrong label: the reference skips it too
    res = aopc(model, images, labels, heatmaps, region=6, steps=9, perturb="zero", batch_size=5)
    f_ref, curve_ref = reference_aopc(model, images, labels, heatmaps, region=6, steps=9, replacement=torch.zeros_like)
    np.testing.assert_allclose(res.f, f_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.curve, curve_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.per_image, (f_ref[:, :1] - f_ref).sum(1) / 10, atol=1e-12)
    assert res.value == res.curve[-1]


def test_misclassified_images_are_excluded_and_counted():
    images, labels, heatmaps = region_data(n=5)
    model = RegionModel(8, 16, 8)
    full = aopc(model, images, labels, heatmaps, region=8, steps=3, perturb="zero")
    labels[[1, 3]] = 0
    res = aopc(model, images, labels, heatmaps, region=8, steps=3, perturb="zero")
    assert (res.n_correct, res.n_excluded) == (3, 2)
    np.testing.assert_array_equal(res.correct, [True, False, True, False, True])
    np.testing.assert_allclose(res.f, full.f[[0, 2, 4]])
    assert res.per_image.shape == (3,)


def test_curve_formula_by_hand():
    # one 1x2x4 image of ones, two 2x2 regions; the left one carries the heat
    image = torch.ones(1, 1, 2, 4, dtype=torch.float64)
    heat = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]])
    res = aopc(SumModel(), image, torch.tensor([1]), heat, region=2, steps=2, perturb="zero")
    sig = lambda s: 1 / (1 + math.exp(-s))  # noqa: E731
    f0, f1, f2 = sig(8), sig(4), sig(0)
    np.testing.assert_allclose(res.f, [[f0, f1, f2]], atol=1e-12)
    np.testing.assert_allclose(
        res.curve, [0.0, (f0 - f1) / 2, ((f0 - f1) + (f0 - f2)) / 3], atol=1e-12
    )
    assert len(res.curve) == 3 and res.curve[0] == 0.0


def test_noise_is_seeded_cumulative_and_batch_independent():
    images, labels, heatmaps = region_data(n=4)
    model = RegionModel(8, 16, 8, gain=4.0)
    inputs: list[torch.Tensor] = []
    model.register_forward_hook(lambda m, args, out: inputs.append(args[0].clone()) and None)
    kwargs = {"region": 8, "steps": 5, "perturb": "noise", "sigma": 0.3, "seed": 7}
    first = aopc(model, images, labels, heatmaps, batch_size=64, **kwargs)
    # the clean images first, then image 0 steps 1..5, image 1 ..., however the forwards cut them
    stack = torch.cat(inputs)[len(images):]
    for k in range(4):
        changed = stack[k] != images[0]
        assert torch.equal(stack[k + 1][changed], stack[k][changed])  # earlier noise kept
        assert (stack[k + 1] != stack[k]).any()  # and one more region perturbed
    again = aopc(model, images, labels, heatmaps, batch_size=3, **kwargs)
    np.testing.assert_allclose(again.f, first.f, rtol=0, atol=1e-7)
    other = aopc(model, images, labels, heatmaps, batch_size=64, **{**kwargs, "seed": 8})
    assert not np.allclose(other.f, first.f)


def test_batched_forward_calls_and_mode_restored():
    images, labels, heatmaps = region_data(n=8)
    model = RegionModel(8, 16, 8)
    calls, modes = [], []
    def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        calls.append(len(args[0]))
        modes.append(module.training)

    model.register_forward_hook(record)
    model.train()
    res = aopc(model, images, labels, heatmaps, region=8, steps=4, batch_size=16)
    # 8 clean images + 8 * 4 perturbed inputs, each once, in batches of at most 16
    assert sum(calls) == 8 + 8 * 4 and max(calls) <= 16 and len(calls) < len(images) * 4
    assert not any(modes) and model.training and res.n_correct == 8


class Timed(nn.Module):
    """A classifier whose forward takes `cost(n)` seconds for a batch of n (a CPU's cache
    behaviour, made deterministic)."""

    def __init__(self, cost: Callable[[int], float]) -> None:
        super().__init__()
        self.cost = cost
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.cost(len(x)))
        return torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1) * self.w


@pytest.mark.parametrize(("cost", "best"), [
    (lambda n: 0.002 * n * n, 1),  # larger batches cost more per image (activations out of cache)
    (lambda n: 0.02 + 0.0001 * n, 16),  # a fixed cost per call: the largest batch
])
def test_cpu_forward_batch_is_the_fastest_per_image(cost: Callable[[int], float], best: int) -> None:
    forward = SoftmaxForward(Timed(cost), limit=16)
    with torch.no_grad():
        probs = forward(torch.rand(80, 1, 4, 4))  # 3 x (1 + 4 + 16) = 63 images try the sizes
    assert probs.shape == (80, 2) and forward.trials == [] and forward.size == best


def test_baseline_gap_and_seeds():
    images, labels, heatmaps = region_data()
    model = RegionModel(8, 16, 8)
    kwargs = {"region": 8, "steps": 4, "perturb": "zero"}
    out = aopc_with_baseline(model, images, labels, heatmaps, seed=3, random_seeds=2, **kwargs)
    rand = [aopc(model, images, labels, heatmaps, order="random", seed=s, **kwargs) for s in (4, 5)]
    assert out["aopc"] == pytest.approx(aopc(model, images, labels, heatmaps, **kwargs).value)
    assert out["aopc_random"] == pytest.approx(np.mean([r.value for r in rand]))
    assert out["aopc_gap"] == pytest.approx(out["aopc"] - out["aopc_random"]) and out["aopc_gap"] > 0
    np.testing.assert_allclose(out["curve_random"], np.mean([r.curve for r in rand], axis=0))
    assert out["per_image_morf"].shape == (6,) and (out["n_correct"], out["n_excluded"]) == (6, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"region": 0}, "region must be >= 1"),
        ({"steps": 17}, r"steps must be in 1..16"),
        ({"steps": 0}, r"steps must be in 1..16"),
        ({"perturb": "blur"}, "perturb must be one of"),
        ({"order": "lerf"}, "order must be one of"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_arguments_raise(change, message):
    images, labels, heatmaps = region_data(n=2)
    with pytest.raises(ValueError, match=message):
        aopc(RegionModel(8, 16, 8), images, labels, heatmaps, **{"region": 8, **change})


def test_shape_mismatch_raises():
    images, labels, heatmaps = region_data(n=3)
    with pytest.raises(ValueError, match=r"heatmaps must be \[N=3"):
        aopc(RegionModel(8, 16, 8), images, labels, heatmaps[:2], region=8)
    with pytest.raises(ValueError, match="labels must be 3 integer"):
        aopc(RegionModel(8, 16, 8), images, labels.float(), heatmaps, region=8)
