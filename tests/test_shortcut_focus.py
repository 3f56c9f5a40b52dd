"""The artefact trap: a model that can read a class-correlated corner marker looks outside the
lungs, and lung focus says so. Real phantom data, real training (slow: outside CI)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from datamodules.phantom import generate_phantom
from experiments import tracking
from experiments.cli import main

TRAIN = [
    "train", "--config", "phantom_demo", "--data.image_size", "96", "--trainer.max_epochs", "6",
    "--data.augment.shift", "0", "--data.augment.zoom", "0", "--data.augment.rotate", "0",
    # layer3 gives 6x6 maps at 96 px: coarse enough to be robust, fine enough to tell a corner
    # marker from the lung fields.
    "--explain.target_layer", "backbone.layer3", "--explain.probe_per_class", "10",
    "--explain.every_n_epochs", "100", "--data.num_workers", "0",
]


def lung_focus(work: Path, shortcut: float, isolate: Callable) -> float:
    """Train on a phantom set with the given shortcut share; the last epoch's lung focus."""
    data = work / f"phantom_{shortcut}"
    generate_phantom(data, n_per_class=60, size=128, seed=1, shortcut=shortcut, progress=False)
    with isolate(work):
        experiment = f"shortcut-{shortcut}"
        assert main([*TRAIN, "--data.root", str(data), "--tracking.experiment", experiment]) == 0
        client = MlflowClient(tracking.resolve_uri())
        (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        return client.get_metric_history(run.info.run_id, "explain/lung_focus")[-1].value


@pytest.mark.slow
def test_shortcut_model_looks_outside_the_lungs(tmp_path: Path, isolate: Callable) -> None:
    clean = lung_focus(tmp_path, 0.0, isolate)
    trapped = lung_focus(tmp_path, 0.9, isolate)
    assert clean > 1.0  # the clean model concentrates on the lungs (1.0 = uniform)
    assert trapped < clean
