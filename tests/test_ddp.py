"""`cxrlab train` under DDP on two CPU processes (gloo): one MLflow run, rank-0 logging."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from cxrlab.lightning_modules.checkpoint import load_classifier


@pytest.fixture(scope="module")
def ddp_run(
    tmp_path_factory: pytest.TempPathFactory, folder_tree: Path
) -> tuple[Path, subprocess.CompletedProcess]:
    """`cxrlab train --config ci_tiny` on 2 CPU devices with the ddp strategy, in a fresh cwd."""
    work = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CXRLAB_DEBUG")}
    env["OMP_NUM_THREADS"] = "1"  # two ranks on two cores
    cmd = [
        sys.executable,
        "-m",
        "cxrlab.experiments.cli.main",
        "train",
        "--config",
        "ci_tiny",
        "--data.root",
        str(folder_tree),
        "--data.num_workers",
        "0",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
    ]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    return work, proc


def test_ddp_exits_cleanly_with_one_run(ddp_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    work, proc = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("== cxrlab train: done ==") == 1  # only rank 0 reports
    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert {"val/acc", "val/macro_f1", "train/loss_epoch", "best/val/macro_f1", "test/acc"} <= set(
        run.data.metrics
    )
    assert run.data.params["trainer.strategy"] == "ddp"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "splits.csv", "val_confusion_matrix.png", "checkpoints"} <= arts


def test_ddp_metrics_count_each_image_once(
    ddp_run: tuple[Path, subprocess.CompletedProcess], split_accuracy: Callable
) -> None:
    """Validation/test metrics must describe the 9-image splits, not the sampler's padded copy.

    DistributedSampler pads 9 images to 10 (5 per rank); metrics over the padded set are
    multiples of 1/10 and disagree with the checkpoint evaluated on the split's files.
    """
    work, proc = ddp_run
    assert proc.returncode == 0
    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    run = client.search_runs([e.experiment_id for e in client.search_experiments()])[0]
    run_id = run.info.run_id
    model = load_classifier(client.download_artifacts(run_id, "checkpoints/model.ckpt", str(work)))
    splits = pd.read_csv(client.download_artifacts(run_id, "splits.csv", str(work)))
    assert (splits["split"] == "test").sum() == 9
    acc = split_accuracy(model, splits, "test", 32)
    assert run.data.metrics["test/acc"] == pytest.approx(acc)
