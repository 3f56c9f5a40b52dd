"""Loader throughput with and without the decode cache, on a generated JPEG tree at Kermany-like
sizes (about 1500 x 1200 px, 8-bit gray).

Run from the repository root:  python -m benchmarks.loader_speed --images 200 --size 224
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cxrlab.datamodules.datamodule import CXRDataset
from cxrlab.datamodules.decode_cache import DecodeCache
from cxrlab.datamodules.images import DEFAULT_DECODING
from cxrlab.datamodules.transforms import eval_transform


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """`n` smooth gray films with grain, 1400-1600 x 1100-1300 px, saved as quality-90 JPEGs."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(1400, 1601)), int(rng.integers(1100, 1301))
        coarse = Image.fromarray(rng.integers(40, 220, (12, 16), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        film = np.asarray(coarse, dtype=np.int16) + rng.normal(0, 6, (h, w)).astype(np.int16)
        path = folder / f"person{i}_bacteria_{i}.jpeg"
        Image.fromarray(np.clip(film, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def images_per_second(dataset: CXRDataset, batch_size: int, workers: int, epochs: int) -> float:
    """Images per wall-clock second over `epochs` passes after a first, untimed one, with workers
    kept alive between passes as training keeps them (data.persistent_workers)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)
    sum(len(y) for _, y in loader)  # starts the workers, fills the OS file cache
    start = time.perf_counter()
    n = sum(len(y) for _ in range(epochs) for _, y in loader)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """Generate the tree, time an uncached pass, the cache build and a warm cached pass."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="JPEGs to generate")
    parser.add_argument("--size", type=int, default=224, help="model input side (data.image_size)")
    parser.add_argument("--batch-size", type=int, default=32, help="data.batch_size")
    parser.add_argument("--workers", type=int, default=2, help="data.num_workers (both loaders)")
    parser.add_argument("--epochs", type=int, default=2, help="timed passes after the untimed first")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the loader workers are the parallelism, as in training
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.images)
        table = pd.DataFrame({"path": paths, "label": "pneumonia"})
        transform = eval_transform(args.size)
        print(
            f"# loader_speed: {args.images} JPEGs of ~1500x1200 px (8-bit gray) -> {args.size} px, "
            f"batch {args.batch_size}, {args.workers} persistent loader workers. img/s = images per "
            f"wall-clock second over {args.epochs} epochs after an untimed first; build = first use of "
            "--data.cache (decodes every image once, 4 threads); warm = epochs, runs and sweep "
            "workers reading the cache"
        )
        plain = CXRDataset(table, ["pneumonia"], transform)
        direct = images_per_second(plain, args.batch_size, args.workers, args.epochs)
        cache = DecodeCache(Path(tmp) / "cache", args.size, 0.0, DEFAULT_DECODING)
        start = time.perf_counter()
        failed = cache.build(paths)
        if len(failed):
            raise SystemExit(f"cache build failed: {failed['error'].iloc[0]}")
        build = len(paths) / (time.perf_counter() - start)
        cached = CXRDataset(table, ["pneumonia"], transform, cache=cache)
        warm = images_per_second(cached, args.batch_size, args.workers, args.epochs)
        print(f"no_cache img/s={direct:.1f}")
        print(f"cache_build img/s={build:.1f}")
        print(f"cache_warm img/s={warm:.1f}")
        print(f"ratio warm/no_cache={warm / direct:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
