"""The cluster launch scripts under docker/, run for real on the CPU: the SLURM array task (as
plain bash: its #SBATCH lines are comments) and the torchrun DDP training with two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from mlflow.tracking import MlflowClient

from cxrlab.experiments.sweeps.storage import open_storage

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_script(script: str, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """bash docker/SCRIPT ARGS in `cwd` with the venv first on PATH and `env` added."""
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CXRLAB_DEBUG")}
    full = base | {"PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""} | env
    return subprocess.run(
        ["bash", str(REPO / "docker" / script), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=600,
    )


def test_slurm_array_task_joins_the_study(tmp_path: Path, folder_tree: Path) -> None:
    raw = yaml.safe_load((REPO / "experiments" / "configs" / "ci_tiny.yaml").read_text())
    raw["trainer"]["limit_train_batches"] = 2
    raw["explain"] = {"enabled": False}
    raw["search"] = {"study_name": "slurm", "sampler": "random", "params": {"model.head": ["gap-linear", "gap-mlp"]}}
    config = tmp_path / "slurm.yaml"
    config.write_text(yaml.safe_dump(raw))
    journal = tmp_path / "study.journal"
    env = {
        "CXRLAB_STORAGE": str(journal), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "DATA": str(folder_tree), "SWEEP_CONFIG": str(config), "TRIALS_PER_TASK": "1",
        "CHECKPOINT_DIR": str(tmp_path / "shared-checkpoints"),
    }
    done = run_script("slurm_sweep.sh", tmp_path, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (trial,) = optuna.load_study(study_name="slurm", storage=open_storage(str(journal))).trials
    assert trial.state.name == "COMPLETE"
    assert any((tmp_path / "shared-checkpoints").rglob("last.ckpt"))  # the shared checkpoint folder

    refused = run_script("slurm_sweep.sh", tmp_path, env | {"CXRLAB_STORAGE": "postgresql://cxrlab:hunter2@db/optuna"})
    assert refused.returncode == 2 and "put it in ~/.pgpass or PGPASSWORD" in refused.stderr


def test_torchrun_ddp_training_records_one_run(tmp_path: Path, folder_tree: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_script(
        "torchrun_train.sh", tmp_path, {"MLFLOW_TRACKING_URI": uri, "MASTER_PORT": str(29500 + os.getpid() % 1000)},
        "2", "--config", "ci_tiny", "--data.root", str(folder_tree), "--trainer.accelerator", "cpu",
        "--explain.enabled", "false", "--trainer.limit_train_batches", "2",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ci-tiny").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["trainer.strategy"] == "ddp"
