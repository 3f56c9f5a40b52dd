"""Explanation speed of cxrlab against the tools a user would pick instead.

Run from the repository root:  python -m benchmarks.explain_speed --backbone resnet18 --batch 16

Each measurement is one function taking the shared `Setup` and returning a `Result`; add a new
one to MEASUREMENTS and it shows up in the table and in --only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

from callbacks.display import minmax, upsample
from callbacks.gradcam import grad_cam, resolve_layer

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


@dataclass(frozen=True)
class Result:
    """Throughput of cxrlab and of the reference tool for one measurement."""

    name: str
    unit: str
    ours: float
    reference: float
    reference_name: str

    @property
    def ratio(self) -> float:
        """How many times faster cxrlab is."""
        return self.ours / self.reference


def best_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Fastest wall time of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


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


MEASUREMENTS: dict[str, Callable[[Setup], Result]] = {"grad_cam": grad_cam_speed}


def build_setup(args: argparse.Namespace) -> Setup:
    """Random-init torchvision classifier and random images, as described by the CLI flags."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = getattr(torchvision.models, args.backbone)(weights=None, num_classes=args.classes)
    model = model.to(device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    layer = resolve_layer(model, BACKBONES[args.backbone])
    return Setup(model, layer, images, args.classes, args.repeats)


def format_table(results: list[Result]) -> str:
    """Plain-text table: one row per measurement."""
    header = f"{'measurement':<14}{'unit':<9}{'cxrlab':>10}{'reference':>11}{'ratio':>8}  reference"
    rows = [
        f"{r.name:<14}{r.unit:<9}{r.ours:>10.2f}{r.reference:>11.2f}{r.ratio:>7.1f}x  "
        f"{r.reference_name}"
        for r in results
    ]
    return "\n".join([header, *rows])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--backbone", default="resnet18", choices=sorted(BACKBONES))
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=4, help="number of classes (all explained)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
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
