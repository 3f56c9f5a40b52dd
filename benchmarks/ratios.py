"""What every benchmark here shares: a measured pair of rates, its ratio, the printed table, and
the best-of-N timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Result:
    """cxrlab's number and the reference's for one measurement (a rate, or seconds where named)."""

    name: str
    unit: str
    ours: float
    reference: float
    reference_name: str

    @property
    def ratio(self) -> float:
        """ours / reference: the speed-up for rates (below 1: the price of what ours adds)."""
        return self.ours / self.reference


def best_seconds(
    fn: Callable[[], object], repeats: int, device: torch.device | None = None, warmup: int = 1
) -> float:
    """Fastest wall time of `repeats` calls after `warmup` untimed calls (CUDA work included)."""
    cuda = device is not None and device.type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def format_table(results: list[Result]) -> str:
    """Plain-text table: one row per measurement."""
    header = f"{'measurement':<14}{'unit':<9}{'cxrlab':>10}{'reference':>11}{'ratio':>8}  reference"
    rows = [
        f"{r.name:<14}{r.unit:<9}{r.ours:>10.2f}{r.reference:>11.2f}{r.ratio:>7.2f}x  {r.reference_name}"
        for r in results
    ]
    return "\n".join([header, *rows])
