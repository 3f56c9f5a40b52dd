"""Speed of batched AOPC against a per-image, per-step loop, and of eigen-heatmaps.

Run from the repository root: python -m benchmarks.aopc_eigen_speed [--help]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from callbacks.aopc import aopc
from callbacks.eigen import eigen_heatmaps


def loop_aopc(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, heatmaps: torch.Tensor,
    region: int, steps: int, sigma: float, seed: int,
) -> float:
    """AOPC the way a per-image loop computes it: one forward pass per perturbed image."""
    height, width = images.shape[-2:]
    boxes = [(r, c) for r in range(0, height, region) for c in range(0, width, region)]
    gen = torch.Generator().manual_seed(seed)
    scores = []
    with torch.no_grad():
        for x, y, h in zip(images, labels, heatmaps, strict=True):
            p0 = model(x[None]).softmax(dim=1)[0]
            cls = int(p0.argmax())
            if cls != int(y):
                continue
            up = F.interpolate(h[None, None], size=(height, width), mode="bilinear",
                               align_corners=False)[0, 0]
            mass = torch.stack([up[r:r + region, c:c + region].sum() for r, c in boxes])
            noise = torch.randn(x.shape, generator=gen).to(x.device)
            noisy = (x + sigma * noise).clamp(0.0, 1.0)
            xk, total = x.clone(), 0.0
            for k in mass.argsort(descending=True)[:steps].tolist():
                r, c = boxes[k]
                xk[:, r:r + region, c:c + region] = noisy[:, r:r + region, c:c + region]
                total += float(p0[cls] - model(xk[None]).softmax(dim=1)[0, cls])
            scores.append(total / (steps + 1))
    return float(np.mean(scores))


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of fn() over repeats, and its last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def synthetic_heatmaps(n: int, classes: int, layer: int, size: int, seed: int):
    """Grad-CAM-like raw maps: class blobs at layer resolution, upsampled to size x size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:layer, :layer] / layer
    centres = rng.uniform(0.25, 0.75, (classes, 2))
    blobs = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 0.02)
    scale = rng.uniform(0.5, 2.0, (n, classes, 1, 1))
    small = scale * blobs + 0.3 * rng.random((n, classes, layer, layer)) ** 3
    maps = F.interpolate(torch.from_numpy(small.astype(np.float32)), size=(size, size),
                         mode="bilinear", align_corners=False)
    return maps.numpy(), rng.integers(0, classes, n)


def main() -> None:
    """Parse arguments, run both benchmarks and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="torchvision model name (weights=None)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--region", type=int, default=34)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--eigen-images", type=int, default=2000, help="images, each with C maps")
    parser.add_argument("--eigen-size", type=int, default=224)
    parser.add_argument("--layer", type=int, default=14, help="heatmap resolution before upsampling")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.get_model(args.model, weights=None, num_classes=args.classes)
    model = model.eval().to(device)
    images = torch.rand(args.images, 3, args.size, args.size, device=device)
    heatmaps = torch.rand(args.images, 7, 7, device=device)
    with torch.no_grad():  # labels = predictions, so every image enters both computations
        labels = model(images).argmax(dim=1).cpu()
    settings = {"region": args.region, "steps": args.steps, "sigma": 0.1, "seed": 0}

    t_batched, res = timed(lambda: aopc(model, images, labels, heatmaps, perturb="noise",
                                        batch_size=args.batch_size, **settings), args.repeats)
    t_loop, loop_value = timed(lambda: loop_aopc(model, images, labels, heatmaps, **settings),
                               args.repeats)
    maps, eig_labels = synthetic_heatmaps(args.eigen_images, args.classes, args.layer,
                                          args.eigen_size, seed=0)
    t_eigen, eig = timed(lambda: eigen_heatmaps(maps, eig_labels,
                                                [f"c{i}" for i in range(args.classes)]),
                         args.repeats)

    eigen_label = f"eigen_heatmaps s ({args.eigen_images} img x {args.classes} maps, {args.eigen_size} px)"
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          f", {torch.get_num_threads()} threads), model {args.model}, {args.images} images of "
          f"{args.size} px, {args.steps} steps, region {args.region}")
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'AOPC batched (aopc) images/s':<44}{args.images / t_batched:>12.2f}")
    print(f"{'AOPC per-image per-step loop images/s':<44}{args.images / t_loop:>12.2f}")
    print(f"{'AOPC speed-up batched / loop (goal >= 8)':<44}{t_loop / t_batched:>12.2f}")
    values = f"{res.value:.3f} / {loop_value:.3f}"
    print(f"{'AOPC value batched / loop (own noise draws)':<44}{values:>12}")
    print(f"{eigen_label:<44}{t_eigen:>12.3f}")
    print(f"{'eigen components kept per class':<44}"
          f"{str([p.n_components for p in eig.pcas if p is not None]):>12}")


if __name__ == "__main__":
    main()
