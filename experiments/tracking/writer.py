"""RunWriter: every write to an MLflow run (params, metrics, tags, artifacts, dataset inputs, its
lifecycle) goes through here, batched within MLflow's limits, so no other module calls the client."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pandas as pd

from cxrlab.callbacks.run_sink import RunSink
from cxrlab.experiments.tracking.store import ensure_experiment, experiment_of

# MLflow's limits per log_batch call (params and tags: 100; all entities: 1000) and per value.
PARAMS_PER_CALL = 100
TAGS_PER_CALL = 100
METRICS_PER_CALL = 500
PARAM_CHARS = 6000
TAG_CHARS = 5000
# Characters MLflow refuses in a metric name (class names reach metric names, e.g. val/recall/<class>).
BAD_METRIC_CHARS = re.compile(r"[^/\w.\- :]")
COMMIT_TAG = "mlflow.source.git.commit"
MODEL_ID_TAG = "cxrlab.model_id"  # a training run's logged model (its best checkpoint as a pyfunc)

if TYPE_CHECKING:
    from mlflow import MlflowClient


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The git commit of the cxrlab code that is running (its checkout), if it is a repository."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def source_tags() -> dict[str, str]:
    """The code's git commit as MLflow's tag (empty outside a checkout)."""
    commit = git_commit()
    return {COMMIT_TAG: commit} if commit else {}


def run_tags(kind: str, backbone: str, head: str, finetune: str, data_root: str | Path) -> dict[str, str]:
    """The tags every run of a model carries: its kind, the model, the dataset folder and the git commit."""
    return {
        "backbone": backbone,
        "head": head,
        "finetune": finetune,
        "dataset": Path(str(data_root)).name,
        "cxrlab.kind": kind,
    } | source_tags()


def write_objects(objects: Mapping[str, Any], folder: str | Path) -> list[Path]:
    """Write {relative name: Figure | DataFrame | bytes | str} into a local folder."""
    from matplotlib.figure import Figure

    folder = Path(folder)
    written = []
    for name, obj in objects.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, Figure):
            obj.savefig(path, dpi=120)
        elif isinstance(obj, pd.DataFrame):
            obj.to_csv(path, index=False)
        elif isinstance(obj, bytes):
            path.write_bytes(obj)
        elif isinstance(obj, str):
            path.write_text(obj)
        else:
            raise TypeError(f"cannot write {name}: unsupported artifact type {type(obj).__name__}")
        written.append(path)
    return written


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class RunWriter(RunSink):
    """The writes to one MLflow run, through `client` (which also knows the tracking URI). It is
    the RunSink that training hands its callbacks (they sit below tracking and see only that)."""

    client: MlflowClient
    run_id: str

    @classmethod
    def open(cls, uri: str, run_id: str) -> RunWriter:
        """A writer for an existing run of the store at `uri`."""
        from mlflow import MlflowClient

        return cls(MlflowClient(uri), run_id)

    @classmethod
    def create(
        cls, client: MlflowClient, experiment_id: str, name: str, tags: Mapping[str, str], parent_id: str | None = None,
        started: float | None = None,
    ) -> RunWriter:
        """A new run (nested under `parent_id` if given) carrying `tags` and the git commit;
        `started` (epoch seconds) dates it from when its work began, not from when it is recorded."""
        tags = source_tags() | dict(tags) | ({"mlflow.parentRunId": parent_id} if parent_id else {})
        start_time = None if started is None else int(started * 1000)
        return cls(client, client.create_run(experiment_id, start_time=start_time, run_name=name, tags=tags).info.run_id)

    @property
    def uri(self) -> str:
        """The tracking URI of the run's store."""
        return self.client.tracking_uri

    # ------------------------------------------------------------------ params, metrics, tags

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log the params the run does not have yet (MLflow forbids changing one, so a resumed run
        keeps its values and gains new keys), values cut to MLflow's limit, 100 per call."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, str(v)[:PARAM_CHARS]) for k, v in params.items() if k not in existing]
        for batch in _chunks(fresh, PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=batch)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int = 0, timestamp_ms: int | None = None, finite_only: bool = False
    ) -> None:
        """Log metrics at `step` in batches; names lose the characters MLflow refuses."""
        from mlflow.entities import Metric

        now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        rows = [
            Metric(BAD_METRIC_CHARS.sub("", k), float(v), now, step)
            for k, v in metrics.items() if not finite_only or math.isfinite(v)
        ]
        for batch in _chunks(rows, METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags, values cut to MLflow's limit, 100 per call."""
        from mlflow.entities import RunTag

        rows = [RunTag(k, str(v)[:TAG_CHARS]) for k, v in tags.items()]
        for batch in _chunks(rows, TAGS_PER_CALL):
            self.client.log_batch(self.run_id, tags=batch)

    # ------------------------------------------------------------------ artifacts

    def log_objects(self, objects: Mapping[str, Any], folder: str | None = None) -> None:
        """Log {name: Figure | DataFrame | bytes | str} under `folder` with one upload."""
        with tempfile.TemporaryDirectory() as tmp:
            write_objects(objects, tmp)
            self.client.log_artifacts(self.run_id, tmp, folder)

    def log_object(self, obj: Any, artifact_file: str) -> None:
        """Log one in-memory object as `artifact_file` (a path inside the run's artifacts)."""
        path = PurePosixPath(artifact_file)
        self.log_objects({path.name: obj}, str(path.parent) if str(path.parent) != "." else None)

    def log_file(self, path: str | Path, artifact_file: str) -> None:
        """Log a local file as `artifact_file` (copied first only when its name differs)."""
        target = PurePosixPath(artifact_file)
        folder = str(target.parent) if str(target.parent) != "." else None
        if Path(path).name == target.name:
            self.client.log_artifact(self.run_id, str(path), folder)
            return
        with tempfile.TemporaryDirectory() as tmp:
            self.client.log_artifact(self.run_id, shutil.copy(path, Path(tmp) / target.name), folder)

    def log_folder(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """Log every file of a local folder under `artifact_path`."""
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    # ------------------------------------------------------------------ dataset inputs

    def log_inputs_once(self, inputs: list[Any], attempts: int = 3) -> None:
        """Log dataset inputs, retrying when a concurrent run inserted the same dataset first."""
        from mlflow.exceptions import MlflowException

        for attempt in range(attempts):
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                return
            except MlflowException as err:
                # Parallel sweep workers log the same dataset (same experiment, name and digest):
                # the store checks for it, then inserts, so the slower insert hits the unique key.
                # The failed transaction is rolled back; on retry the store finds and reuses it.
                duplicate = any(s in str(err) for s in ("UNIQUE constraint", "duplicate key", "Duplicate entry"))
                if not duplicate or attempt == attempts - 1:
                    raise

    def log_dataset(self, table: pd.DataFrame, source: str, name: str, context: str = "training") -> None:
        """Log a sample table as the run's dataset input (`context`: what the run used it for)."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():
            # A local folder matches two of MLflow's registered source types, both the same class.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            dataset = mlflow.data.from_pandas(table, source=source, targets="label", name=name)
        tag = InputTag(key="mlflow.data.context", value=context)
        self.log_inputs_once([DatasetInput(dataset._to_mlflow_entity(), tags=[tag])])

    # ------------------------------------------------------------------ logged models

    def log_model(
        self,
        python_model: Any,
        artifacts: Mapping[str, str],
        signature: Any,
        input_example: Any,
        metrics: Mapping[str, float],
        requirements: Sequence[str],
        name: str = "model",
        step: int = 0,
    ) -> str:
        """Log a pyfunc `python_model` (with its `artifacts` files, `signature`, `input_example` and
        pip `requirements`)
        as an MLflow logged model of this run, link `metrics` to it, tag the run with its id
        (cxrlab.model_id) and return the id. Through this writer's client, never the fluent API,
        so the model lands in the run's own store and experiment whatever mlflow's global URI is."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
        from mlflow.models import Model
        from mlflow.pyfunc import save_model

        run = self.client.get_run(self.run_id)
        model = self.client.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=self.run_id, params=run.data.params, tags=source_tags()
        )
        try:
            with tempfile.TemporaryDirectory() as tmp:
                meta = Model(artifact_path=model.artifact_location, run_id=self.run_id, model_id=model.model_id,
                             model_uuid=model.model_id)
                # Requirements are given, not inferred: inference loads the model in a subprocess.
                save_model(Path(tmp) / "model", python_model=python_model, artifacts=dict(artifacts),
                           signature=signature, input_example=input_example, mlflow_model=meta,
                           pip_requirements=list(requirements))
                self.client.log_model_artifacts(model.model_id, str(Path(tmp) / "model"))
            self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step)])
            now = int(time.time() * 1000)
            linked = [
                Metric(BAD_METRIC_CHARS.sub("", k), float(v), now, step, model_id=model.model_id, run_id=self.run_id)
                for k, v in metrics.items() if math.isfinite(v)
            ]
            for batch in _chunks(linked, METRICS_PER_CALL):
                self.client.log_batch(self.run_id, metrics=batch)
        except BaseException:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self.set_tags({MODEL_ID_TAG: model.model_id})
        return model.model_id

    # ------------------------------------------------------------------ lifecycle

    def reopen(self) -> None:
        """Mark the run RUNNING again (a sweep's parent run that gains children after it closed)."""
        if self.client.get_run(self.run_id).info.status != "RUNNING":
            self.client.update_run(self.run_id, status="RUNNING")

    def rename(self, name: str) -> None:
        """Give the run a new name."""
        self.client.update_run(self.run_id, name=name)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run with `status` (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(self.run_id, status)


def log_derived_run(
    uri: str,
    train_run_id: str | None,
    default_experiment: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    folder: str | Path,
    artifact_path: str | None = None,
    started: float | None = None,
) -> tuple[str, str]:
    """A run made from a checkpoint (evaluate, explain): filed in the training run's experiment
    when this store knows it, else `default_experiment`; every file of `folder` as artifacts. It
    spans `started` (when the work began, epoch seconds) to now, so the UI shows the work's time."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment_id = experiment_of(client, train_run_id) or ensure_experiment(client, default_experiment, uri)
    tags = dict(tags) | {"cxrlab.train_run_id": train_run_id or "unknown"}
    run = RunWriter.create(client, experiment_id, run_name, tags, started=started)
    try:
        run.log_params(params)
        run.log_metrics(metrics)
        run.log_folder(folder, artifact_path)
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish()
    return run.run_id, experiment_id


def register_model(uri: str, model_id: str, name: str, alias: str | None = None) -> str:
    """Register logged model `model_id` as a new version of registered model `name` (created on
    first use) in the store at `uri`, move `alias` to it when given, and return the version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    client = MlflowClient(uri)
    model = client.get_logged_model(model_id)
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # A local registry looks the models:/ source up through mlflow's global tracking URI, not this
    # client's (a TODO in mlflow's SqlAlchemyStore): point it at this store for the call.
    with _use_tracking_uri(uri):
        version = client.create_model_version(
            name, f"models:/{model_id}", run_id=model.source_run_id, model_id=model_id
        ).version
    if alias:
        client.set_registered_model_alias(name, alias, str(version))
    return str(version)
