"""Checkpoints on disk and in the store: where a run's checkpoints go, and how a reference to one
(a path, runs:/RUN_ID[/ARTIFACT], or a model: models:/NAME@ALIAS, models:/NAME/VERSION,
models:/MODEL_ID) becomes a local file. The file format itself (reading one
safely, rebuilding its model) is cxrlab.lightning_modules.checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlab.config import first_line
from cxrlab.experiments.tracking.store import DEFAULT_ARTIFACTS, resolve_run_id, resolve_uri
from cxrlab.experiments.tracking.writer import MODEL_ID_TAG


def checkpoint_root(uri: str, checkpoint_dir: str | None = None) -> Path:
    """Where Lightning checkpoints go: tracking.checkpoint_dir, else beside a local SQLite store,
    else ./mlruns/checkpoints."""
    if checkpoint_dir:
        return Path(checkpoint_dir).expanduser().resolve()
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "checkpoints"
    return DEFAULT_ARTIFACTS.parent / "checkpoints"


RUNS_SCHEME = "runs:/"
MODELS_SCHEME = "models:/"
MODEL_CHECKPOINT = "checkpoint"  # the artifact key of the checkpoint inside a cxrlab logged model
RUN_CHECKPOINT = "checkpoints/model.ckpt"  # the best checkpoint every run logs
RUN_LAST_CHECKPOINT = "checkpoints/last.ckpt"  # the resume checkpoint, uploaded with a server


def local_checkpoint(ref: str | Path, uri: str | None, checkpoint_dir: str | None = None) -> Path:
    """A checkpoint file: a local path as given, or runs:/RUN_ID[/ARTIFACT] or a models:/ URI
    downloaded from the tracking store `uri` (resolved here, so a bad local path never creates a
    store) under <checkpoint root>/downloads (default artifact: the run's best checkpoint)."""
    ref = str(ref)
    if ref.startswith(MODELS_SCHEME):
        return model_checkpoint(ref, resolve_uri(uri), checkpoint_dir)
    if not ref.startswith(RUNS_SCHEME):
        return Path(ref)
    uri = resolve_uri(uri)
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    run_id, _, artifact = ref.removeprefix(RUNS_SCHEME).strip("/").partition("/")
    from mlflow import MlflowClient

    try:
        run_id = resolve_run_id(MlflowClient(uri), run_id)  # a unique prefix works, as for git commits
    except ValueError as err:
        raise FileNotFoundError(f"{ref}: no such checkpoint on {uri} ({err})") from None
    dst = checkpoint_root(uri, checkpoint_dir) / "downloads" / run_id
    dst.mkdir(parents=True, exist_ok=True)
    try:
        path = download_artifacts(run_id=run_id, artifact_path=artifact or RUN_CHECKPOINT, dst_path=str(dst), tracking_uri=uri)
    except (MlflowException, OSError) as err:
        raise FileNotFoundError(
            f"{ref}: no such checkpoint on {uri} ({first_line(err)}); runs:/RUN_ID/{RUN_CHECKPOINT} is the best "
            f"checkpoint, runs:/RUN_ID/{RUN_LAST_CHECKPOINT} the resume one"
        ) from None
    return Path(path)


def model_checkpoint(ref: str, uri: str, checkpoint_dir: str | None = None) -> Path:
    """The checkpoint inside the model `ref` (models:/NAME@ALIAS, models:/NAME/VERSION or
    models:/MODEL_ID) of the store `uri`, downloaded under <checkpoint root>/downloads/<model id>."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    model_id = model_id_of(MlflowClient(uri), ref, uri)
    dst = checkpoint_root(uri, checkpoint_dir) / "downloads" / model_id
    dst.mkdir(parents=True, exist_ok=True)
    try:
        # models:/ artifacts look the model up through mlflow's global tracking URI whatever
        # tracking_uri says: point it at this store for the call.
        with _use_tracking_uri(uri):
            folder = Path(download_artifacts(artifact_uri=f"{MODELS_SCHEME}{model_id}", dst_path=str(dst), tracking_uri=uri))
    except (MlflowException, OSError) as err:
        raise FileNotFoundError(f"{ref}: the model's files could not be downloaded from {uri} ({first_line(err)})") from None
    artifacts = Model.load(folder / "MLmodel").flavors.get("python_function", {}).get("artifacts", {})
    if MODEL_CHECKPOINT not in artifacts:
        raise ValueError(f"{ref}: not a cxrlab model (no {MODEL_CHECKPOINT!r} artifact); give a model logged by `cxrlab train`")
    return folder / artifacts[MODEL_CHECKPOINT]["path"]


def model_id_of(client: Any, ref: str, uri: str) -> str:
    """The logged model id a models:/ URI names; an unknown model, alias or version is one line
    naming it and what the registry has."""
    from mlflow.exceptions import MlflowException

    body = ref.removeprefix(MODELS_SCHEME).strip("/")
    name, at, alias = body.partition("@")
    name, slash, version = name.partition("/")
    try:
        if not at and not slash:  # a logged model id (m-...)
            return client.get_logged_model(body).model_id
        found = client.get_model_version_by_alias(name, alias) if at else client.get_model_version(name, version)
    except MlflowException:
        raise FileNotFoundError(f"{ref}: {_registry_has(client, name, bool(at or slash))} on {uri}") from None
    # Over a server's REST API a version may not carry model_id; its source still names the model.
    source = found.source or ""
    model_id = found.model_id or (source.removeprefix(MODELS_SCHEME) if source.startswith(f"{MODELS_SCHEME}m-") else None)
    if model_id is None:  # a version registered from a run's artifacts, not a logged model
        raise ValueError(f"{ref}: version {found.version} of {name} is no logged model; register a cxrlab model with `cxrlab register`")
    return model_id


def _registry_has(client: Any, name: str, registered: bool) -> str:
    """What exists under `name`: its aliases and versions, or the registered models' names."""
    from mlflow.exceptions import MlflowException

    if not registered:
        return f"no logged model {name!r}; give models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-<model id>"
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=20))
        return f"no registered model {name!r} (registered: {', '.join(names) or 'none'})"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    aliases = ", ".join(f"@{a}" for a in sorted(model.aliases)) or "none"
    return f"no such version or alias of {name} (versions: {', '.join(map(str, versions))}; aliases: {aliases})"


def model_of(client: Any, ref: str) -> tuple[str, str | None]:
    """(model id, source run id) of a logged model id (m-...) or of a training run (id or unique
    prefix): the run's tagged model, else the newest logged model it is the source of."""
    from mlflow.exceptions import MlflowException

    try:
        if ref.startswith("m-"):
            model = client.get_logged_model(ref)
            return model.model_id, model.source_run_id
        run = client.get_run(resolve_run_id(client, ref))
    except MlflowException:
        raise FileNotFoundError(f"{ref}: no such run or logged model on {client.tracking_uri}; check the id and --tracking_uri") from None
    run_id = run.info.run_id
    if MODEL_ID_TAG in run.data.tags:
        return run.data.tags[MODEL_ID_TAG], run_id
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
    )
    if not models:
        raise ValueError(f"run {run_id}: no logged model (runs trained before cxrlab logged models, evaluate "
                         "and explain runs, and tracking.log_checkpoint=false have none); give a training run")
    return models[0].model_id, run_id
