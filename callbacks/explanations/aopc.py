"""AOPC: area over the MoRF perturbation curve, evaluated with batched forward passes."""

from __future__ import annotations

import math
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlab.config import AOPCConfig, Perturb
from cxrlab.config.errors import DetailWarning
from cxrlab.lightning_modules.eval_mode import eval_mode
from cxrlab.lightning_modules.probabilities import explained_classes, is_multilabel, output_probs

ORDERS = ("morf", "random")
DEFAULTS = AOPCConfig()  # the schema states the defaults once; the keyword defaults below read them


def grid_regions(height: int, width: int, region: int) -> int:
    """How many square regions of `region` px tile a height x width image (edge regions partial)."""
    return math.ceil(height / region) * math.ceil(width / region)


def check_grid(height: int, width: int, region: int, steps: int) -> None:
    """Fail, naming the config keys, when the AOPC grid has fewer regions than steps."""
    if region < 1:
        raise ValueError(f"explain.aopc.region={region}: region must be >= 1 pixel")
    n = grid_regions(height, width, region)
    size = f"{height} px" if height == width else f"{height}x{width} px"
    if region > min(height, width):
        raise ValueError(f"explain.aopc.region={region} is larger than the {size} input; lower explain.aopc.region")
    if steps < 1:
        raise ValueError(f"explain.aopc.steps={steps}: steps must be in 1..{n}")
    if steps > n:
        raise ValueError(
            f"explain.aopc.steps={steps} exceeds the {n} regions of {region} px on a {size} input "
            f"(steps must be in 1..{n}); lower explain.aopc.steps or explain.aopc.region"
        )


@dataclass
class AOPCResult:
    """AOPC curve over steps plus the per-image numbers behind it."""

    curve: np.ndarray  # [steps + 1], AOPC_L for L = 0..steps (curve[0] = 0)
    per_image: np.ndarray  # [n_correct], AOPC at L = steps
    f: np.ndarray  # [n_correct, steps + 1], probability of the predicted class after k steps
    correct: np.ndarray  # [N] bool, images that entered the average
    n_correct: int
    n_excluded: int
    value: float  # curve[-1]


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """Device of the model's parameters (fallback for parameter-free models)."""
    param = next(model.parameters(), None)
    return fallback if param is None else param.device


def _validate(
    images: torch.Tensor, labels: torch.Tensor, heatmaps: torch.Tensor, region: int, steps: int,
    perturb: str, sigma: float, order: str, batch_size: int,
) -> None:
    """Raise ValueError on inconsistent AOPC arguments."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor [N, ch, H, W], got {images.dtype} "
                         f"{tuple(images.shape)}")
    n, _, height, width = images.shape
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"labels must be {n} integer class indices, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if heatmaps.ndim != 3 or len(heatmaps) != n:
        raise ValueError(f"heatmaps must be [N={n}, h, w] (one map per image), got "
                         f"{tuple(heatmaps.shape)}")
    bad = int((~torch.isfinite(heatmaps)).flatten(1).any(1).sum())
    if bad:
        # NaN sorts first and would be perturbed first: a silently wrong MoRF order.
        raise ValueError(f"heatmaps: {bad} of {n} maps hold NaN or infinite values; fix the method that made them")
    check_grid(height, width, region, steps)
    if perturb not in PERTURBATIONS:
        raise ValueError(f"perturb must be one of {tuple(PERTURBATIONS)}, got {perturb!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def region_grid(height: int, width: int, region: int) -> torch.Tensor:
    """Region index [H, W] of each pixel for a grid of region x region squares (edges partial)."""
    rows = torch.arange(height) // region
    cols = torch.arange(width) // region
    return rows[:, None] * math.ceil(width / region) + cols[None, :]


def _region_masses(heatmaps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Summed heatmap mass per region: heatmaps [N, H, W] at grid's size -> [N, R]."""
    n_regions = int(grid.max()) + 1
    flat = heatmaps.reshape(len(heatmaps), -1).to(torch.float64)
    masses = torch.zeros(len(heatmaps), n_regions, dtype=torch.float64, device=heatmaps.device)
    return masses.index_add_(1, grid.reshape(-1).to(heatmaps.device), flat)


def perturbation_steps(
    heatmaps: torch.Tensor, grid: torch.Tensor, order: str, seed: int
) -> torch.Tensor:
    """Step (1-based) at which each region is perturbed: [N, R], by mass (morf) or at random."""
    masses = _region_masses(heatmaps, grid)
    if order == "morf":
        # stable sort: equal-mass regions keep grid order, so results are reproducible
        ranked = masses.argsort(dim=1, descending=True, stable=True)
    else:
        gen = torch.Generator().manual_seed(seed)
        ranked = torch.rand(masses.shape, generator=gen).argsort(dim=1).to(masses.device)
    step_of = torch.empty_like(ranked)
    positions = torch.arange(1, ranked.shape[1] + 1, device=ranked.device)
    return step_of.scatter_(1, ranked, positions.expand_as(ranked))


def _image_noise(like: torch.Tensor, seed: int) -> torch.Tensor:
    """Standard normal noise shaped like images [b, ...], fixed per (seed, image content)."""
    noise = torch.empty(like.shape, dtype=like.dtype)
    # One generator per image, seeded by the image's own pixels: its noise (and so its AOPC) is
    # the same in any batch, at any position, with any other images beside it.
    for row, image in zip(noise, like.detach().cpu(), strict=True):
        own = zlib.crc32(image.contiguous().numpy().tobytes())
        state = int(np.random.SeedSequence([seed, own]).generate_state(1, dtype=np.uint64)[0])
        row.normal_(generator=torch.Generator().manual_seed(state))
    return noise.to(like.device)


# Every explain.aopc.perturb choice: (images x [b, ch, H, W], sigma, seed) -> the fully perturbed
# images; masks pick which pixels take them.
PERTURBATIONS: dict[Perturb, Callable[[torch.Tensor, float, int], torch.Tensor]] = {
    "noise": lambda x, sigma, seed: (x + sigma * _image_noise(x, seed)).clamp(0.0, 1.0),
    "mean": lambda x, sigma, seed: x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x),
    "zero": lambda x, sigma, seed: torch.zeros_like(x),
}


class SoftmaxForward:
    """Softmax probabilities of a model (a sigmoid per finding for a multi-label one), in float64
    (bf16/fp16 logits lose nothing more in the softmax), run in forward batches of a size that suits the device.

    An accelerator takes `limit` images per forward. On a CPU a large batch can run slower per
    image than batch 1: its activations spill out of the cache (a 2-core EPYC ran batch 64 at
    0.8x the per-image loop). So on the CPU the first forwards try sizes 1, 4, 16, `limit` in turn
    on real work (three forwards each, the first not timed), stop at the first size slower per
    image than the one before, and the rest run at the fastest.
    """

    def __init__(self, model: nn.Module, limit: int) -> None:
        self.model = model
        self.device = _model_device(model, torch.device("cpu"))
        on_cpu = self.device.type == "cpu"
        self.trials = sorted({s for s in (1, 4, 16) if s < limit} | {limit}) if on_cpu else []
        self.per_image: dict[int, float] = {}
        self.runs = 0
        self.size = limit

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities [n, K] of a batch [n, ch, H, W] already on the model's device."""
        out, start = [], 0
        while start < len(batch):
            size = self.trials[0] if self.trials else self.size
            part = batch[start:start + size]
            tic = time.perf_counter()
            out.append(output_probs(self.model, self.model(part).double()))
            if self.trials and len(part) == size:
                self._timed(size, time.perf_counter() - tic)
            start += len(part)
        return torch.cat(out)

    def _timed(self, size: int, seconds: float) -> None:
        self.runs += 1
        if self.runs == 1:
            return  # the first forward of a shape also builds its kernels
        # the faster of two runs: a busy machine's scheduler pauses only ever add time
        self.per_image[size] = min(self.per_image.get(size, math.inf), seconds / size)
        if self.runs < 3:
            return
        self.trials.pop(0)
        self.runs = 0
        best = min(self.per_image, key=self.per_image.__getitem__)
        if best != size:
            self.trials = []  # past the cache's sweet spot: larger batches only get slower
        if not self.trials:
            self.size = best


@torch.no_grad()
def predict_probs(forward: SoftmaxForward, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax probabilities [N, K] of the unperturbed images."""
    return torch.cat([
        forward(images[i:i + batch_size].to(forward.device)) for i in range(0, len(images), batch_size)
    ])


@torch.no_grad()
def _perturbed_probs(
    forward: SoftmaxForward, images: torch.Tensor, index: torch.Tensor, classes: torch.Tensor,
    step_of: torch.Tensor, grid: torch.Tensor, steps: int, perturb: str, sigma: float, seed: int,
    batch_size: int,
) -> torch.Tensor:
    """Probability of classes [n] after steps 1..steps for images[index]: [n, steps]."""
    device = forward.device
    grid, step_of = grid.to(device), step_of.to(device)
    out = torch.empty(len(index), steps, dtype=torch.float64)
    levels = torch.arange(1, steps + 1, device=device)
    # Whole images per group, so each image's perturbation (its noise) is built once; the
    # group's steps x images inputs then run as full forward batches.
    group = max(1, batch_size // steps)
    for start in range(0, len(index), group):
        rows = index[start:start + group]
        x = images[rows].to(device)
        rep = PERTURBATIONS[perturb](x, sigma, seed)
        # region-level test first, then one bool gather to pixels: [g, steps, H, W]
        done = (step_of[rows.to(device)][:, None, :] <= levels[None, :, None])[:, :, grid]
        batch = torch.where(done[:, :, None], rep[:, None], x[:, None]).flatten(0, 1)
        probs = forward(batch).reshape(len(rows), steps, -1)
        picked = classes[start:start + group].to(device)[:, None, None].expand(-1, steps, 1)
        out[start:start + len(rows)] = probs.gather(2, picked)[..., 0].cpu()
    return out


def _aopc_from_predictions(
    forward: SoftmaxForward, images: torch.Tensor, labels: torch.Tensor, heatmaps: torch.Tensor,
    probs: torch.Tensor, region: int, steps: int, perturb: str, sigma: float, order: str,
    seed: int, batch_size: int,
) -> AOPCResult:
    """AOPC given the unperturbed probabilities, so baselines can share that forward pass."""
    height, width = images.shape[-2:]
    grid = region_grid(height, width, region)
    maps = F.interpolate(heatmaps[:, None].to(torch.float64), size=(height, width),
                         mode="bilinear", align_corners=False)[:, 0]
    step_of = perturbation_steps(maps, grid, order, seed)
    pred, correct = (t.cpu() for t in explained_classes(probs, labels, is_multilabel(forward.model)))
    index = torch.nonzero(correct)[:, 0]
    f0 = probs.cpu()[index, pred[index]]
    f_steps = _perturbed_probs(forward, images, index, pred[index], step_of, grid, steps,
                               perturb, sigma, seed, batch_size)
    f = torch.cat([f0[:, None], f_steps], dim=1).numpy()
    n_correct = len(index)
    if n_correct == 0:
        warnings.warn("no image is classified correctly: AOPC is NaN", DetailWarning, stacklevel=3)
    # AOPC_L = mean_i sum_{k<=L} (f_i(x0) - f_i(xk)) / (L+1); the k=0 term is zero
    cumulative = np.cumsum(f[:, :1] - f, axis=1)
    norm = np.arange(1, steps + 2)
    curve = cumulative.mean(axis=0) / norm if n_correct else np.full(steps + 1, np.nan)
    return AOPCResult(
        curve=curve,
        per_image=cumulative[:, -1] / (steps + 1),
        f=f,
        correct=correct.numpy(),
        n_correct=n_correct,
        n_excluded=len(images) - n_correct,
        value=float(curve[-1]),
    )


def aopc(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, heatmaps: torch.Tensor,
    region: int = DEFAULTS.region, steps: int = DEFAULTS.steps, perturb: str = DEFAULTS.perturb,
    sigma: float = DEFAULTS.sigma, order: str = "morf", seed: int = 0, batch_size: int = 64,
) -> AOPCResult:
    """AOPC of heatmaps [N, h, w] for model on correctly classified images [N, ch, H, W]."""
    _validate(images, labels, heatmaps, region, steps, perturb, sigma, order, batch_size)
    with eval_mode(model):
        forward = SoftmaxForward(model, batch_size)
        probs = predict_probs(forward, images, batch_size)
        return _aopc_from_predictions(forward, images, labels, heatmaps, probs, region, steps,
                                      perturb, sigma, order, seed, batch_size)


def aopc_with_baseline(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, heatmaps: torch.Tensor,
    region: int = DEFAULTS.region, steps: int = DEFAULTS.steps, perturb: str = DEFAULTS.perturb,
    sigma: float = DEFAULTS.sigma, seed: int = 0, batch_size: int = 64, random_seeds: int = DEFAULTS.random_seeds,
) -> dict[str, float | int | np.ndarray]:
    """MoRF AOPC, the mean random-order AOPC over random_seeds seeds, their gap and curves."""
    _validate(images, labels, heatmaps, region, steps, perturb, sigma, "morf", batch_size)
    if random_seeds < 1:
        raise ValueError(f"random_seeds must be >= 1, got {random_seeds}")
    args = (region, steps, perturb, sigma)
    with eval_mode(model):
        forward = SoftmaxForward(model, batch_size)
        probs = predict_probs(forward, images, batch_size)
        morf = _aopc_from_predictions(forward, images, labels, heatmaps, probs, *args, "morf",
                                      seed, batch_size)
        rand = [
            _aopc_from_predictions(forward, images, labels, heatmaps, probs, *args, "random",
                                   seed + 1 + r, batch_size)
            for r in range(random_seeds)
        ]
    aopc_random = float(np.mean([r.value for r in rand]))
    return {
        "aopc": morf.value,
        "aopc_random": aopc_random,
        "aopc_gap": morf.value - aopc_random,
        "curve_morf": morf.curve,
        "curve_random": np.mean([r.curve for r in rand], axis=0),
        "per_image_morf": morf.per_image,
        "per_image_random": np.mean([r.per_image for r in rand], axis=0),
        "n_correct": morf.n_correct,
        "n_excluded": morf.n_excluded,
    }
