"""Phantom generator throughput: images per second written to disk (PNGs + metadata).

Run from the repository root:  python -m benchmarks.phantom_speed --size 128 256 --workers 1 2
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

from cxrlab.datamodules.phantom import PHANTOM_CLASSES, generate_phantom


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished worker processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(size: int, n_per_class: int, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to generate a full phantom into a fresh temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        generate_phantom(tmp, n_per_class=n_per_class, size=size, workers=workers, progress=False)
        return time.perf_counter() - wall, _cpu_seconds() - cpu


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, time every (size, workers) setting and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[128, 256], help="image sides")
    parser.add_argument("--n-per-class", type=int, default=50, help="images per class")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="process counts")
    args = parser.parse_args(argv)
    n_images = args.n_per_class * len(PHANTOM_CLASSES)
    print(
        f"# generate_phantom: {n_images} images ({len(PHANTOM_CLASSES)} classes), each written as "
        "image + lung mask + lesion mask PNG. img/s = images / wall-clock seconds (incl. pool "
        "start-up); img/cpu-s = images / CPU seconds of all processes, i.e. the per-core rate, "
        "which stays meaningful on a busy machine"
    )
    for size in args.size:
        for workers in args.workers:
            wall, cpu = measure(size, args.n_per_class, workers)
            print(
                f"size={size} workers={workers} images={n_images} wall_s={wall:.2f} "
                f"img/s={n_images / wall:.1f} img/cpu-s={n_images / cpu:.1f}"
            )


if __name__ == "__main__":
    main()
