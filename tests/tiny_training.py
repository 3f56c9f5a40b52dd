"""A few-step training run on a tiny dataset, shared by the evaluate and predict tests."""

from __future__ import annotations

from pathlib import Path

import torch

from cxrlab.experiments.cli.main import main


def train_tiny(data: Path, *overrides: str) -> tuple[Path, str]:
    """Train ci_tiny on `data` in the current folder; return (best checkpoint, MLflow run id)."""
    assert main(["train", "--config", "ci_tiny", "--data.root", str(data), *overrides]) == 0
    ckpts = Path("mlruns/checkpoints").glob("*/*/checkpoints/best-*.ckpt")
    ckpt = max(ckpts, key=lambda p: p.stat().st_mtime).resolve()
    return ckpt, torch.load(ckpt, map_location="cpu", weights_only=True)["cxrlab"]["run_id"]
