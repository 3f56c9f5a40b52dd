"""Crash-safe resume: a `cxrlab train` killed with SIGKILL mid-run continues after its last
completed epoch, in the same MLflow run, with exactly one metric value per step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from cxrlab.experiments.cli.main import main
from cxrlab.experiments.tracking import store

CXRLAB = str(Path(sys.executable).parent / "cxrlab")
EPOCHS = 4
ARGS = [
    "--config", "ci_tiny", "--data.num_workers", "0", "--data.image_size", "64",
    "--trainer.max_epochs", str(EPOCHS), "--tracking.log_checkpoint", "false", "--explain.enabled", "false",
]


def _epoch_of(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"])


def _wait_for_second_epoch(work: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    """Poll until last.ckpt has been written twice (epochs 0 and 1 done); return its path.

    last.ckpt is replaced by a rename each epoch, so a new inode means a new complete file."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        for last in work.glob("mlruns/checkpoints/*/*/checkpoints/last.ckpt"):
            try:
                seen.add(last.stat().st_ino)
            except FileNotFoundError:
                continue
            if len(seen) >= 2:
                return last
        time.sleep(0.02)
    raise AssertionError("last.ckpt was not rewritten after the second epoch")


def test_sigkill_then_resume(in_tmp_cwd: Path, folder_tree: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([CXRLAB, "train", *ARGS, "--data.root", str(folder_tree)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        last = _wait_for_second_epoch(in_tmp_cwd, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = _epoch_of(last)
    assert killed_at in (1, 2)  # epochs 0-1 (maybe 2) are complete, the rest is lost

    client = MlflowClient(store.resolve_uri())
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "RUNNING"  # killed: nobody closed it

    assert main(["train", "--resume", str(last), "--data.num_workers", "0"]) == 0

    (resumed,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert resumed.info.run_id == run.info.run_id
    assert resumed.info.status == "FINISHED"
    assert _epoch_of(last) == EPOCHS - 1
    for key in ("val/macro_f1", "val/loss", "train/loss_epoch", "train/loss_step", "epoch"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), f"{key}: duplicate steps {sorted(steps)}"
    epochs = client.get_metric_history(run.info.run_id, "val/macro_f1")
    assert len(epochs) == EPOCHS  # every epoch once: none lost, none repeated
