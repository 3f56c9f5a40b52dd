"""Tracking helpers against a real SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow.data
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import DatasetInput
from mlflow.exceptions import MlflowException

from cxrlab.experiments.tracking import checkpoints, store
from cxrlab.experiments.tracking.writer import RunWriter, git_commit

DUPLICATE = "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest"


class LosesTheRace(MlflowClient):
    """A client whose first log_inputs loses a race: another worker inserts the same dataset
    first and this insert hits the store's unique key, as seen with two sweep workers in CI."""

    def __init__(self, uri: str, rival_run: str, error: str) -> None:
        super().__init__(uri)
        self.rival = MlflowClient(uri)
        self.rival_run, self.error, self.calls = rival_run, error, 0

    def log_inputs(self, run_id: str, datasets: list | None = None, **kw: object) -> None:
        self.calls += 1
        if self.calls == 1:
            self.rival.log_inputs(self.rival_run, datasets=datasets)
            raise MlflowException(self.error)
        super().log_inputs(run_id, datasets=datasets, **kw)


def dataset_input() -> DatasetInput:
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["normal", "covid"]})
    return DatasetInput(mlflow.data.from_pandas(frame, source="/data", name="tiny")._to_mlflow_entity(), tags=[])


def two_runs(tmp_path: Path) -> tuple[str, str, str]:
    uri = store.resolve_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient(uri)
    exp = store.ensure_experiment(client, "race", uri)
    return uri, client.create_run(exp).info.run_id, client.create_run(exp).info.run_id


def test_log_inputs_retries_after_losing_the_insert_race(tmp_path: Path) -> None:
    uri, mine, rival = two_runs(tmp_path)
    client = LosesTheRace(uri, rival, DUPLICATE)
    RunWriter(client, mine).log_inputs_once([dataset_input()])
    assert client.calls == 2
    digests = [[d.dataset.digest for d in MlflowClient(uri).get_run(r).inputs.dataset_inputs] for r in (mine, rival)]
    assert digests[0] == digests[1] and len(digests[0]) == 1


def test_log_inputs_other_errors_are_not_swallowed(tmp_path: Path) -> None:
    uri, mine, rival = two_runs(tmp_path)
    client = LosesTheRace(uri, rival, "RESOURCE_DOES_NOT_EXIST: run gone")
    with pytest.raises(MlflowException, match="run gone"):
        RunWriter(client, mine).log_inputs_once([dataset_input()])
    assert client.calls == 1


def test_writer_batches_within_mlflow_limits_and_keeps_a_resumed_runs_params(tmp_path: Path) -> None:
    """250 params and 1200 metrics need several log_batch calls (100 params, 1000 entities each);
    a second write keeps the first values and adds only new keys, as a resumed run does."""
    uri, mine, _ = two_runs(tmp_path)
    run = RunWriter.open(uri, mine)
    run.log_params({f"p{i:03d}": i for i in range(250)} | {"long": "x" * 7000})
    run.log_params({"p000": "changed", "new": "added"})
    run.log_metrics({f"m{i:04d}": float(i) for i in range(1200)} | {"val/recall/a(b)": 1.0, "nan": float("nan")}, step=3)
    run.log_metrics({"skipped": float("inf"), "kept": 2.0}, finite_only=True)
    run.set_tags({f"t{i:03d}": i for i in range(150)})
    data = MlflowClient(uri).get_run(mine).data
    assert len(data.params) == 252 and data.params["p000"] == "0" and data.params["new"] == "added"
    assert len(data.params["long"]) == 6000
    assert len(data.metrics) == 1203 and data.metrics["m1199"] == 1199.0 and data.metrics["val/recall/ab"] == 1.0
    assert "skipped" not in data.metrics and data.metrics["kept"] == 2.0
    assert MlflowClient(uri).get_metric_history(mine, "m0000")[0].step == 3
    assert data.tags["t149"] == "149"


def test_writer_artifacts_and_lifecycle(tmp_path: Path) -> None:
    """In-memory objects, a file under another name and a folder land where asked; a child run
    carries its parent and the git commit; finish closes it."""
    import matplotlib.figure

    uri, parent, _ = two_runs(tmp_path)
    client = MlflowClient(uri)
    child = RunWriter.create(client, client.get_run(parent).info.experiment_id, "child", {"k": "v"}, parent_id=parent)
    fig = matplotlib.figure.Figure()
    fig.add_subplot().plot([0, 1])
    child.log_objects({"a.png": fig, "t.csv": pd.DataFrame({"x": [1]}), "b.bin": b"\x00", "n.txt": "hi"}, "objs")
    child.log_object("yaml: 1\n", "config.yaml")
    (tmp_path / "local.ckpt").write_bytes(b"ckpt")
    child.log_file(tmp_path / "local.ckpt", "checkpoints/model.ckpt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "report.md").write_text("# r")
    child.log_folder(tmp_path / "folder", "report")
    child.finish("KILLED")
    names = {a.path for d in ("objs", "checkpoints", "report") for a in client.list_artifacts(child.run_id, d)}
    names |= {a.path for a in client.list_artifacts(child.run_id)}
    assert {"objs/a.png", "objs/t.csv", "objs/b.bin", "objs/n.txt", "config.yaml", "checkpoints/model.ckpt", "report/report.md"} <= names
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["k"] == "v"
    commit = run.data.tags.get("mlflow.source.git.commit")  # absent outside a git checkout
    assert (commit is None) == (git_commit() is None) and (commit is None or len(commit) == 40)
    assert run.info.status == "KILLED" and child.uri == uri


def test_two_trainings_started_together_on_a_new_store_are_both_recorded(tmp_path: Path, folder_tree: Path) -> None:
    """Both processes reach MLflow's table creation on a store that does not exist yet."""
    import os
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "cxrlab.experiments.cli.main", "train", "--config", "ci_tiny", "--data.root", str(folder_tree),
           "--tracking.uri", uri, "--trainer.limit_train_batches", "1", "--explain.enabled", "false"]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([*cmd, "--tracking.run_name", f"run{i}"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ci-tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["run0", "run1"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_half_created_store_gets_one_line_with_the_way_out(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "broken" / "mlflow.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:  # what an interrupted migration can leave: a revision MLflow never wrote
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('half0done')")
    with pytest.raises(store.StoreError) as err:
        store.resolve_uri(f"sqlite:///{db}")
    message = str(err.value)
    assert "\n" not in message and f"rm {db}" in message and "half-created or damaged" in message


def test_unknown_runs_checkpoint_is_one_line(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(FileNotFoundError) as err:
        checkpoints.local_checkpoint("runs:/0123456789abcdef/checkpoints/last.ckpt", uri)
    message = str(err.value)
    assert "\n" not in message and message.startswith("runs:/0123456789abcdef/checkpoints/last.ckpt: no such checkpoint")
    assert checkpoints.local_checkpoint(tmp_path / "x.ckpt", uri) == tmp_path / "x.ckpt"  # a path stays a path
