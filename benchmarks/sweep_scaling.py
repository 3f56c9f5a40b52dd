"""Sweep scaling: trials per hour with 1 worker vs K workers optimising the same kind of study.

Run from the repository root:  python -m benchmarks.sweep_scaling [--workers K] [--trials N]
On a GPU machine K defaults to one worker per GPU; on a CPU-only machine to one per core
(each worker then gets cores/K torch threads, the single worker all of them). Every trial
costs the same (only the learning rate is searched), so the ratio measures the runner.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial

from cxrlab.datamodules.phantom import generate_phantom
from cxrlab.experiments.sweeps.runner import run_sweep, visible_gpus
from cxrlab.experiments.sweeps.storage import open_storage

BASE = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "phantom_sweep.yaml"


def bench_config(path: Path, data: Path, image_size: int, epochs: int) -> Path:
    """phantom_sweep's training config with a cost-neutral search (learning rate only)."""
    raw = yaml.safe_load(BASE.read_text())
    raw["data"] |= {"root": str(data), "image_size": image_size, "num_workers": 0, "augment": {}}
    raw["trainer"] |= {"max_epochs": epochs}
    raw["tracking"] = {"experiment": "sweep-scaling", "log_checkpoint": False}
    raw["explain"] = {"enabled": False}
    raw["search"] = {
        "study_name": "scaling", "sampler": "random", "pruner": "none",
        "params": {"model.lr": {"low": 1.0e-4, "high": 3.0e-3, "log": True}},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def steady_rate(trials: list[FrozenTrial]) -> float:
    """Trials per hour between the first trial's start and the last one's end (no start-up)."""
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return len(trials) / max((end - start).total_seconds(), 1e-9) * 3600


def measure(config: Path, workers: int, trials: int, gpus: str, root: Path) -> dict[str, Any]:
    """Run one sweep in a fresh folder; wall-clock and steady-state trials/hour."""
    work = root / f"workers-{workers}"
    work.mkdir()
    os.chdir(work)
    start = time.perf_counter()
    outcome = run_sweep(config, n_trials=trials, workers=workers, gpus=gpus)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=outcome.study_name, storage=open_storage(outcome.storage))
    done = [t for t in study.trials if t.state.is_finished()]
    return {"workers": workers, "trials": len(done), "wall_s": wall,
            "per_hour": len(done) / wall * 3600, "steady_per_hour": steady_rate(done)}


def main(argv: list[str] | None = None) -> None:
    """Time a 1-worker and a K-worker sweep of N trials each and print the speed-up."""
    gpus = visible_gpus()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=len(gpus) or len(os.sched_getaffinity(0)),
                        help="K [default: GPUs, else CPU cores]")
    parser.add_argument("--trials", type=int, default=None, help="trials per sweep [default: 3*K]")
    parser.add_argument("--image-size", type=int, default=64, help="input side [default: 64]")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial [default: 2]")
    parser.add_argument("--n-per-class", type=int, default=40, help="phantom images per class [default: 40]")
    args = parser.parse_args(argv)
    trials = args.trials or 3 * args.workers
    device = ",".join(gpus) if gpus else "none"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "phantom"
        generate_phantom(data, n_per_class=args.n_per_class, size=args.image_size, progress=False)
        config = bench_config(root / "scaling.yaml", data, args.image_size, args.epochs)
        try:
            rows = [measure(config, k, trials, device, root) for k in (1, args.workers)]
        finally:
            os.chdir(home)
    one, many = rows
    print(f"# sweep scaling: {trials} trials per sweep, resnet18 {args.image_size}px, {args.epochs} epoch(s), "
          f"{'GPUs ' + device if gpus else f'CPU ({len(os.sched_getaffinity(0))} cores)'}")
    print(f"{'workers':>7} {'trials':>6} {'wall s':>8} {'trials/h':>9} {'steady trials/h':>16}")
    for r in rows:
        print(f"{r['workers']:>7} {r['trials']:>6} {r['wall_s']:>8.1f} {r['per_hour']:>9.1f} {r['steady_per_hour']:>16.1f}")
    k = args.workers
    wall_speedup = many["per_hour"] / one["per_hour"]
    steady_speedup = many["steady_per_hour"] / one["steady_per_hour"]
    print(f"speed-up with {k} workers: {wall_speedup:.2f}x wall-clock, {steady_speedup:.2f}x steady-state "
          f"(goal >= {0.9 * k:.1f}x)")


if __name__ == "__main__":
    main()
