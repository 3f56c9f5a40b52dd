"""The multi-node path without Docker: a real `mlflow server` on PostgreSQL (artifacts proxied
into a temp folder) and a PostgreSQL Optuna study, shared by two `cxrlab sweep` launches that
stand for two nodes. Every command runs as its own process in its own working directory, and
what a node needs from another comes through the server alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow.artifacts
import optuna
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from servers import create_database

from cxrlab.experiments.sweeps.storage import open_storage
from cxrlab.experiments.sweeps.trial_runs import PARENT_ATTR, RUN_ATTR
from cxrlab.lightning_modules.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
# One trial on one worker per node: the nodes share the study's numbering, its parent run and the
# server all the same, and every trial costs a training with explanations and uploaded checkpoints.
# Several worker processes on one study are tests/test_sweep.py's (journal file and PostgreSQL).
TRIALS_PER_NODE = 1


def node_config(path: Path, data: Path) -> Path:
    """ci_tiny (1 epoch of 2 batches, explanations on) + a small search over the head."""
    raw = yaml.safe_load((REPO / "experiments" / "configs" / "ci_tiny.yaml").read_text())
    raw["data"] |= {"root": str(data), "split": [0.6, 0.2, 0.2]}
    raw["trainer"] |= {"limit_train_batches": 2}
    raw["tracking"]["experiment"] = "multinode"
    raw["search"] = {
        "study_name": "multinode", "sampler": "random", "pruner": "none",
        "params": {"model.head": ["gap-linear", "gap-mlp"], "model.lr": {"low": 1e-3, "high": 1e-2, "log": True}},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def cxrlab(cwd: Path, server: str, *args: str) -> subprocess.Popen[str]:
    """`cxrlab ARGS` as a process of its own in `cwd`, recording into `server`."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"MLFLOW_TRACKING_URI": server, "PYTHONPATH": str(REPO)}
    env.pop("CXRLAB_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "cxrlab.experiments.cli.main", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> str:
    """Wait for a process; its output, after asserting it exited 0."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{out[-4000:]}"
    return out


def children(client: MlflowClient, parent: str) -> list[Any]:
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=100)


def test_two_nodes_one_study_through_a_tracking_server(
    tmp_path: Path, folder_tree: Path, postgres: str, mlflow_server: str
) -> None:
    storage = create_database(postgres, "optuna")
    config = node_config(tmp_path / "multinode.yaml", folder_tree)
    sweep = ["sweep", "--config", str(config), "--storage", storage, "--workers", "1", "--gpus", "none",
             "--n_trials", str(TRIALS_PER_NODE)]
    nodes = [cxrlab(tmp_path / node, mlflow_server, *sweep) for node in ("node-a", "node-b")]
    outputs = [finish(p) for p in nodes]

    study = optuna.load_study(study_name="multinode", storage=open_storage(storage))
    trials = study.trials
    assert [t.number for t in trials] == list(range(2 * TRIALS_PER_NODE))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * len(trials), outputs
    client = MlflowClient(mlflow_server)
    parent = study.user_attrs[PARENT_ATTR]
    assert all(f"MLflow parent run: {parent}" in out for out in outputs)  # one parent for both nodes
    runs = children(client, parent)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [t.number for t in trials]
    assert {r.info.run_id for r in runs} == {t.user_attrs[RUN_ATTR] for t in trials}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert client.get_run(parent).info.status == "FINISHED"
    experiment = client.get_experiment(client.get_run(parent).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    # Artifacts come back through the server's proxy, to a folder no node wrote to.
    run_id = runs[0].info.run_id
    assert {"checkpoints/model.ckpt", "checkpoints/last.ckpt"} <= {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert client.list_artifacts(run_id, "explain")
    fetched = tmp_path / "fetched"
    got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints", dst_path=str(fetched), tracking_uri=mlflow_server))
    assert read_checkpoint(got / "model.ckpt")["hyper_parameters"]["classes"] == ["covid", "normal", "pneumonia"]
    explain = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="explain", dst_path=str(fetched), tracking_uri=mlflow_server))
    assert any(p.suffix == ".png" for p in explain.rglob("*"))

    # A third machine with nothing but the server: compare and evaluate from run ids.
    elsewhere = tmp_path / "elsewhere"
    out = finish(cxrlab(elsewhere, mlflow_server, "compare", *(r.info.run_id for r in runs[:2]), "--out", "cmp"))
    assert runs[0].info.run_id[:8] in out and (elsewhere / "cmp").is_dir()
    out = finish(cxrlab(elsewhere, mlflow_server, "evaluate", f"runs:/{run_id}", "--out", "report", "--n_boot", "20", "--quiet"))
    assert (elsewhere / "report" / "report.html").is_file()
    evaluations = client.search_runs([experiment.experiment_id], filter_string=f"tags.`cxrlab.train_run_id` = '{run_id}'")
    assert len(evaluations) == 1 and evaluations[0].info.status == "FINISHED"


def test_resume_on_another_node_from_the_server(tmp_path: Path, folder_tree: Path, mlflow_server: str) -> None:
    """Node A trains 1 epoch and is gone; node B continues the same run from runs:/.../last.ckpt."""
    train = ["train", "--config", "ci_tiny", "--data.root", str(folder_tree), "--trainer.limit_train_batches", "2",
             "--explain.enabled", "false"]
    finish(cxrlab(tmp_path / "node-a", mlflow_server, *train))
    client = MlflowClient(mlflow_server)
    (first,) = client.search_runs([client.get_experiment_by_name("ci-tiny").experiment_id])
    run_id = first.info.run_id
    node_b = tmp_path / "node-b"
    finish(cxrlab(node_b, mlflow_server, "train", "--resume", f"runs:/{run_id}/checkpoints/last.ckpt", "--trainer.max_epochs", "2"))
    (resumed,) = client.search_runs([first.info.experiment_id])
    assert resumed.info.run_id == run_id and resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "epoch")][-1] >= 1
    steps = [m.step for m in client.get_metric_history(run_id, "val/acc")]
    assert len(steps) == len(set(steps)) == 2  # one value per epoch, none replayed
    last = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/last.ckpt", dst_path=str(tmp_path / "c"), tracking_uri=mlflow_server))
    assert read_checkpoint(last)["epoch"] == 1  # node B's epoch went back to the server
