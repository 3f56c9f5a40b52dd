"""Training-step throughput: cxrlab (Lightning + CXRClassifier) vs a hand-written PyTorch loop.

Both train the same CXRClassifier with the same optimiser, batch, precision and in-memory data
(so disk decoding is not measured), alternating runs to cancel drift; prints images/s and ratio.
`--reference fp32` instead compares cxrlab at its precision (bf16 + channels_last on a GPU)
with cxrlab in plain fp32 without channels_last: what mixed precision buys.

    python -m benchmarks.train_throughput --backbone resnet18 --size 224 --batch 32 --steps 30
    python -m benchmarks.train_throughput --backbone vgg19 --finetune frozen --device cuda
    python -m benchmarks.train_throughput --backbone vgg19 --reference fp32 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cxrlab.config import Config, load_config
from cxrlab.experiments.training.train import precision_for
from cxrlab.lightning_modules.classifier import CXRClassifier


def build_model(
    backbone: str, size: int, classes: int, finetune: str = "full", channels_last: bool = True
) -> CXRClassifier:
    """A fresh CXRClassifier as `cxrlab train` would build it (weights none)."""
    cfg = load_config(overrides={
        "model.backbone": backbone, "model.weights": "none", "model.finetune": finetune,
        "data.image_size": size, "trainer.channels_last": channels_last,
    })
    torch.manual_seed(0)
    return CXRClassifier(cfg, [f"c{i}" for i in range(classes)])


def make_loader(n: int, size: int, classes: int, batch: int, device: str) -> DataLoader:
    """In-memory grayscale images in [0, 1] and labels."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True, pin_memory=device == "cuda")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def raw_loop(model: CXRClassifier, loader: DataLoader, warmup: int, steps: int, device: str, precision: str) -> float:
    """Images/s of a plain PyTorch training loop over the same model."""
    model = model.to(device).train()
    if device == "cuda":
        model.to(memory_format=torch.channels_last)
        model._channels_last = True
    opt = model.configure_optimizers()
    dtype = torch.bfloat16 if precision.startswith("bf16") else None
    done, t0 = 0, 0.0
    batches = iter(_forever(loader))
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            done += len(y)
    _sync(device)
    return done / (time.perf_counter() - t0)


def _forever(loader: DataLoader):
    while True:
        yield from loader


class _Clock(L.Callback):
    """Times the training steps after `warmup` batches."""

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device, self.t0, self.images = warmup, device, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.t0 == 0.0:
            _sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.t0:
            self.images += len(batch[1])

    def rate(self) -> float:
        _sync(self.device)
        return self.images / (time.perf_counter() - self.t0)


def cxrlab_loop(model: CXRClassifier, loader: DataLoader, warmup: int, steps: int, device: str, precision: str) -> float:
    """Images/s of cxrlab's training step: Lightning fit with its metrics and logging."""
    clock = _Clock(warmup, device)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
        max_steps=warmup + steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
        callbacks=[clock], log_every_n_steps=10,
    )
    trainer.fit(model, train_dataloaders=loader)
    return clock.rate()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--backbone", nargs="+", default=["resnet18"], metavar="NAME[:FINETUNE]",
        help="registry backbone(s), each measured in turn; NAME:FINETUNE overrides --finetune [resnet18]",
    )
    p.add_argument("--size", type=int, default=224, help="input side in pixels [224]")
    p.add_argument("--batch", type=int, default=32, help="batch size [32]")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run [20]")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per run [3]")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each [3]")
    p.add_argument("--classes", type=int, default=4, help="number of classes [4]")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda")
    p.add_argument("--finetune", default="full", help="frozen | full | scratch | last:N [full]")
    p.add_argument("--precision", default=None, help="Lightning precision [auto: bf16-mixed on a bf16 GPU, else 32-true]")
    p.add_argument(
        "--reference", choices=("raw", "fp32"), default="raw",
        help="raw: a hand-written loop at the same precision (goal >= 0.95); fp32: cxrlab in fp32 "
        "without channels_last (goal >= 2 on a GPU) [raw]",
    )
    args = p.parse_args()
    if args.precision:
        precision = args.precision
    else:
        precision = precision_for(Config()) if args.device == "cuda" else "32-true"
    n = args.batch * (args.warmup + args.steps)
    loader = make_loader(n, args.size, args.classes, args.batch, args.device)
    for spec in args.backbone:
        backbone, _, finetune = spec.partition(":")
        measure(args, loader, backbone, finetune or args.finetune, precision)


def measure(args: argparse.Namespace, loader: DataLoader, backbone: str, finetune: str, precision: str) -> None:
    """Alternating runs of cxrlab and the reference for one model; prints the rates and the ratio."""
    model = lambda **kw: build_model(backbone, args.size, args.classes, finetune, **kw)  # noqa: E731
    timed = (args.warmup, args.steps, args.device)
    if args.reference == "raw":
        runs = {"raw PyTorch": lambda: raw_loop(model(), loader, *timed, precision)}
        goal = 0.95
    else:
        runs = {"cxrlab fp32": lambda: cxrlab_loop(model(channels_last=False), loader, *timed, "32-true")}
        goal = 2.0
    runs["cxrlab"] = lambda: cxrlab_loop(model(), loader, *timed, precision)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            rates[name].append(run())
    print(f"\ntraining throughput: {backbone} {finetune} {args.size}px batch {args.batch} {precision} on "
          f"{args.device} ({args.repeats} alternating runs x {args.steps} steps, median)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"  {k:<12} {v:8.1f} images/s   runs: {', '.join(f'{r:.1f}' for r in rates[k])}")
    ref = next(iter(runs))
    print(f"  ratio {backbone} {finetune}: cxrlab / {ref} = {med['cxrlab'] / med[ref]:.3f}   (goal >= {goal:g})")


if __name__ == "__main__":
    main()
