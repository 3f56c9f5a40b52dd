"""Everything handed to DataLoader workers pickles, so training works under fork, spawn and
forkserver (Python 3.14's default on Linux) alike."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from cxrlab.datamodules.datamodule import CXRDataModule
from cxrlab.experiments.cli.main import main


def test_every_split_dataset_pickles(make_config: Any, folder_tree: Path) -> None:
    cfg = make_config({"data.root": str(folder_tree), "data.augment.rotate": 10, "data.augment.shift": 0.1,
                       "data.crop_margin": 0.05, "data.balance": "augment_minority", "data.image_size": 32})
    dm = CXRDataModule(cfg.data, seed=0)
    dm.setup("fit")
    for split, ds in dm.datasets.items():
        copy = pickle.loads(pickle.dumps(ds))
        x, y = copy[0]
        assert x.shape[-2:] == (32, 32) and int(y) == int(ds[0][1])
        if split != "train":  # evaluation transforms are deterministic: the copy computes the same
            assert torch.equal(x, ds[0][0])


# spawn is slow here (each loader worker re-imports torch and Lightning) and CI already covers it:
# sweep workers are spawned, so the shipped phantom_sweep's loader workers are spawned too.
@pytest.mark.parametrize("method", [pytest.param("spawn", marks=pytest.mark.slow), "forkserver"])
def test_training_with_worker_start_method(method: str, in_tmp_cwd: Path, folder_tree: Path) -> None:
    # Every loader starts its worker afresh, and under spawn or forkserver each one imports torch:
    # seconds of CPU apiece. The persistent train (augmented) and val (evaluation transform) loaders
    # hand the workers every kind of dataset there is; a test split and the trust fit would add three
    # more loaders of the same evaluation datasets.
    code = main([
        "train", "--config", "ci_tiny", "--data.root", str(folder_tree), "--data.num_workers", "1",
        "--data.start_method", method, "--data.augment.rotate", "10", "--explain.enabled", "false",
        "--tracking.log_checkpoint", "false", "--data.split", "[0.7, 0.3]", "--trust.enabled", "false",
    ])
    assert code == 0
