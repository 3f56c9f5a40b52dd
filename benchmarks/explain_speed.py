"""Explanation speed of cxrlab against the tools a user would pick instead, in one run:

- grad_cam: all-class Grad-CAM maps/s, cxrlab's batched grad_cam vs pytorch-grad-cam (goal >= 5x on
  CPU, >= 15x on GPU);
- aopc: AOPC images/s, batched perturbation steps vs a per-image, per-step loop (goal >= 8x);
- occlusion: all-class occlusion maps, images/s, batched hidden copies vs a per-image, per-window
  loop (goal >= 3x on CPU);
- eigen: eigen-heatmaps of 2,000 heatmaps of 224^2 (per-class Gram-matrix PCA) vs a full SVD of
  each class' data matrix (goal < 2 s);
- callback: the share of epoch time the ExplainCallback costs with default settings (goal <= 10 %)
  on a phantom training epoch of --epoch-images images.

Run from the repository root:  python -m benchmarks.explain_speed [--only grad_cam aopc occlusion eigen callback]

Each measurement is one function taking the shared `Setup` and returning a `Result`; add a new
one to MEASUREMENTS and it shows up in the table and in --only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from benchmarks.ratios import Result, best_seconds, format_table
from benchmarks.reference_aopc import reference_aopc
from benchmarks.reference_occlusion import reference_occlusion
from cxrlab.callbacks.explanations.aopc import aopc
from cxrlab.callbacks.explanations.display import minmax, upsample
from cxrlab.callbacks.explanations.eigen import eigen_heatmaps
from cxrlab.callbacks.explanations.gradcam import grad_cam, resolve_layer
from cxrlab.callbacks.explanations.methods import heatmaps
from cxrlab.config import ExplainConfig, OcclusionConfig

# torchvision name -> Grad-CAM target layer (the last conv stage, as pytorch-grad-cam suggests)
BACKBONES = {
    "resnet18": "layer4",
    "resnet50": "layer4",
    "vgg16": "features",
    "densenet121": "features",
    "mobilenet_v3_large": "features",
}


@dataclass(frozen=True)
class Setup:
    """One model, target layer and image batch shared by every measurement."""

    model: nn.Module
    layer: nn.Module
    images: Tensor
    num_classes: int
    repeats: int
    args: argparse.Namespace






def grad_cam_speed(setup: Setup) -> Result:
    """Grad-CAM maps/s for every class of every image, display-ready (upsampled, min-max)."""
    # Imported here: each measurement's reference tool is an optional dev dependency.
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    images, device = setup.images, setup.images.device
    size = tuple(images.shape[-2:])

    def ours() -> Tensor:
        return minmax(upsample(grad_cam(setup.model, setup.layer, images), size))

    with GradCAM(model=setup.model, target_layers=[setup.layer]) as cam:
        # pytorch-grad-cam takes one target per image, so all-class maps need one call per class.
        def theirs() -> list:
            return [
                cam(input_tensor=images, targets=[ClassifierOutputTarget(c)] * len(images))
                for c in range(setup.num_classes)
            ]

        reference = best_seconds(theirs, setup.repeats, device)
    maps = len(images) * setup.num_classes
    return Result(
        name="grad_cam",
        unit="maps/s",
        ours=maps / best_seconds(ours, setup.repeats, device),
        reference=maps / reference,
        reference_name="pytorch-grad-cam GradCAM",
    )


def aopc_speed(setup: Setup) -> Result:
    """AOPC images/s (noise, 10 steps, region 34): batched vs one forward per perturbed image."""
    a = setup.args
    heatmaps = torch.rand(len(setup.images), 7, 7, device=setup.images.device)
    with torch.no_grad():  # labels = predictions, so every image enters both computations
        labels = setup.model(setup.images).argmax(dim=1).cpu()
    settings = {"region": a.region, "steps": a.steps, "sigma": 0.1, "seed": 0}
    device = setup.images.device
    ours = best_seconds(lambda: aopc(setup.model, setup.images, labels, heatmaps, batch_size=64, **settings), 1, device)
    gen = torch.Generator().manual_seed(0)

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return (x + 0.1 * torch.randn(x.shape, generator=gen).to(x.device)).clamp(0.0, 1.0)

    loop = best_seconds(lambda: reference_aopc(
        setup.model, setup.images, labels, heatmaps, a.region, a.steps, noisy), 1, device)
    n = len(setup.images)
    return Result("aopc", "images/s", n / ours, n / loop, "per-image per-step loop")


def occlusion_speed(setup: Setup) -> Result:
    """Occlusion images/s (every class's map): batched hidden copies vs one forward per hidden copy."""
    window, stride = setup.args.window, setup.args.stride
    settings = ExplainConfig(occlusion=OcclusionConfig(window=window, stride=stride))
    model, images, device = setup.model, setup.images, setup.images.device
    ours = best_seconds(lambda: heatmaps(model, setup.layer, images, "occlusion", settings=settings), 1, device)
    loop = best_seconds(lambda: reference_occlusion(model, images, window, stride), 1, device)
    n = len(images)
    return Result("occlusion", "images/s", n / ours, n / loop, "per-image per-window loop")


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


def eigen_speed(setup: Setup) -> Result:
    """Eigen-heatmaps of --eigen-images x classes maps: cxrlab vs a full SVD per class (seconds, as 1/s)."""
    a = setup.args
    maps, labels = synthetic_heatmaps(a.eigen_images, setup.num_classes, 14, 224, seed=0)
    names = [f"c{i}" for i in range(setup.num_classes)]
    ours = best_seconds(lambda: eigen_heatmaps(maps, labels, names), 1, torch.device("cpu"))

    def full_svd() -> list:
        return [np.linalg.svd(maps[labels == c, c].reshape(int((labels == c).sum()), -1), full_matrices=False)
                for c in range(setup.num_classes)]

    reference = best_seconds(full_svd, 1, torch.device("cpu"))
    print(f"  eigen: {ours:.2f} s for {a.eigen_images} images x {setup.num_classes} maps of 224^2 (goal < 2 s)")
    return Result("eigen", "runs/s", 1 / ours, 1 / reference, "numpy full SVD per class")


def callback_share(setup: Setup) -> Result:
    """ExplainCallback seconds vs the epoch's own train+validation seconds, default explain settings."""
    from cxrlab.config import load_config
    from cxrlab.datamodules.phantom import generate_phantom
    from cxrlab.experiments.training.train import train

    a = setup.args
    timer = EpochClock()
    with tempfile.TemporaryDirectory() as tmp:
        per_class = max(2, int(a.epoch_images / 0.8 / 4))
        generate_phantom(f"{tmp}/phantom", n_per_class=per_class, size=max(128, a.epoch_size), seed=0, progress=False)
        overrides = {
            "data.image_size": a.epoch_size,
            "data.root": f"{tmp}/phantom", "data.split": [0.8, 0.1, 0.1], "model.backbone": "resnet18",
            "trainer.max_epochs": 1, "trainer.enable_progress_bar": False, "tracking.uri": f"sqlite:///{tmp}/mlflow.db",
            "trainer.accelerator": "gpu" if setup.images.device.type == "cuda" else "cpu",
        }
        result = train(load_config(overrides=overrides), callbacks=[timer])
    explain = result.metrics["explain/seconds"]
    epoch = timer.seconds
    share = explain / (epoch + explain)
    print(f"  callback: epoch {epoch:.1f} s ({a.epoch_images} train images at {a.epoch_size} px), explain {explain:.1f} s "
          f"-> {100 * share:.1f} % of the epoch (goal <= 10 %)")
    return Result("callback", "seconds", explain, epoch, "the epoch's train+val seconds")


class EpochClock(L.Callback):
    """Times the first epoch's training and validation loops (the explanations come after)."""

    seconds = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.seconds = time.perf_counter() - self.start


MEASUREMENTS: dict[str, Callable[[Setup], Result]] = {
    "grad_cam": grad_cam_speed,
    "aopc": aopc_speed,
    "occlusion": occlusion_speed,
    "eigen": eigen_speed,
    "callback": callback_share,
}


def build_setup(args: argparse.Namespace) -> Setup:
    """Random-init torchvision classifier and random images, as described by the CLI flags."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = getattr(torchvision.models, args.backbone)(weights=None, num_classes=args.classes)
    model = model.to(device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    layer = resolve_layer(model, BACKBONES[args.backbone])
    return Setup(model, layer, images, args.classes, args.repeats, args)




def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--backbone", default="resnet18", choices=sorted(BACKBONES))
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=4, help="number of classes (all explained)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    parser.add_argument("--steps", type=int, default=10, help="AOPC perturbation steps")
    parser.add_argument("--region", type=int, default=34, help="AOPC region side in pixels")
    parser.add_argument("--window", type=int, default=OcclusionConfig().window, help="occlusion window side in pixels")
    parser.add_argument("--stride", type=int, default=OcclusionConfig().stride, help="occlusion stride in pixels")
    parser.add_argument("--eigen-images", type=int, default=2000, help="images for the eigen timing")
    parser.add_argument("--epoch-images", type=int, default=3200, help="training images of the callback epoch")
    parser.add_argument("--epoch-size", type=int, default=224, help="input side of the callback epoch (both sides scale with it)")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(MEASUREMENTS), help="run only these measurements"
    )
    args = parser.parse_args(argv)
    for flag in ("batch", "size", "classes", "repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be a positive integer")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the selected measurements and print the table."""
    args = parse_args(argv)
    setup = build_setup(args)
    print(
        f"{args.backbone}, batch {args.batch}, {args.size} px, {args.classes} classes, "
        f"{args.device}, {torch.get_num_threads()} threads"
    )
    names = args.only or list(MEASUREMENTS)
    print(format_table([MEASUREMENTS[name](setup) for name in names]))


if __name__ == "__main__":
    main()
