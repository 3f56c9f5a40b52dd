"""Every shipped config loads (a sweep's whole search space included) and runs, as a user runs it,
with overrides only for sizes and epochs (and weights: none: tests never download)."""

from __future__ import annotations

from pathlib import Path

import dataset_trees as trees
import mlflow
import pytest
from test_study_configs import STUDIES

from cxrlab.config import load_config, read_yaml
from cxrlab.experiments.cli.flags import CONFIG_DIR
from cxrlab.experiments.cli.main import main
from cxrlab.experiments.sweeps.runner import load_sweep
from cxrlab.experiments.training.checks import check_config

CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
SWEEPS = [c for c in CONFIGS if "search" in read_yaml(CONFIG_DIR / f"{c}.yaml")]
SMALL = ["--trainer.max_epochs", "1", "--data.batch_size", "8", "--explain.display_size", "32",
         "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2"]
# Configs the phantom set can feed: (input size, AOPC region) scaled for the CPU.
ON_PHANTOM = {"ci_tiny": (32, 8)}
# Sweeps: (fixture-tree writer or None for the phantom, input size, AOPC region). Inception needs
# >= 75 px, so the backbone grid runs at 80 px.
SWEEP_DATA = {
    "sweep_aopc_pair": (trees.write_covid_radiography, 128, 25),
    "sweep_backbones": (trees.write_kermany, 80, 16),
}


# Run elsewhere, at its own settings: 2 workers and its own loader workers, 0 FAIL trials.
# The README's commands run them as a user does (tests/test_readme.py, which also fails on any
# FAIL trial or failed run): phantom_sweep with 2 workers and its own loader workers.
ELSEWHERE = {name: "tests/test_readme.py" for name in ("phantom_demo", "phantom_sweep", "phantom_shortcut_sweep")}
# Trained as shipped, once for its module, on a multi-label phantom set.
ELSEWHERE["phantom_multilabel"] = "tests/test_multilabel_training.py"


def test_every_config_is_run_by_a_test() -> None:
    covered = set(ON_PHANTOM) | set(SWEEP_DATA) | set(STUDIES) | set(ELSEWHERE)
    assert covered == set(CONFIGS), f"configs without a run test: {set(CONFIGS) - covered}"


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_passes_the_whole_checks(name: str) -> None:
    """Plain configs pass the cross-field checks; a sweep's every sampleable corner does too."""
    path = CONFIG_DIR / f"{name}.yaml"
    if name in SWEEPS:
        load_sweep(path)
    else:
        check_config(load_config(path), str(path))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cxrlab.datamodules.phantom import generate_phantom

    root = tmp_path_factory.mktemp("phantom") / "ph"
    generate_phantom(root, n_per_class=16, size=64, seed=0, progress=False)
    return root


def _runs(work: Path) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize("name", list(ON_PHANTOM))
def test_config_trains_on_the_phantom(name: str, phantom: Path, in_tmp_cwd: Path) -> None:
    size, region = ON_PHANTOM[name]
    args = ["train", "--config", name, "--data.root", str(phantom), "--data.image_size", str(size),
            "--explain.aopc.region", str(region), *SMALL]
    assert main(args) == 0
    (run,) = _runs(in_tmp_cwd)
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize("name", list(SWEEP_DATA))
def test_sweep_config_runs_a_trial(name: str, phantom: Path, in_tmp_cwd: Path) -> None:
    write, size, region = SWEEP_DATA[name]
    root = phantom if write is None else write(in_tmp_cwd / "download")
    args = ["sweep", "--config", name, "--data.root", str(root), "--n_trials", "1", "--workers", "1",
            "--model.weights", "none", "--data.image_size", str(size), "--explain.aopc.region", str(region),
            "--data.num_workers", "0", *SMALL]
    assert main(args) == 0
    runs = _runs(in_tmp_cwd)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 1  # k-fold studies nest one run per fold under the trial's run
    assert all(r.info.status == "FINISHED" for r in runs)
