"""Checkpoints on disk and in the store: where a run's checkpoints go, and how a reference to one
(a path, or runs:/RUN_ID[/ARTIFACT]) becomes a local file. The file format itself (reading one
safely, rebuilding its model) is cxrlab.lightning_modules.checkpoint."""

from __future__ import annotations

from pathlib import Path

from cxrlab.config import first_line
from cxrlab.experiments.tracking.store import DEFAULT_ARTIFACTS, resolve_run_id, resolve_uri


def checkpoint_root(uri: str, checkpoint_dir: str | None = None) -> Path:
    """Where Lightning checkpoints go: tracking.checkpoint_dir, else beside a local SQLite store,
    else ./mlruns/checkpoints."""
    if checkpoint_dir:
        return Path(checkpoint_dir).expanduser().resolve()
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "checkpoints"
    return DEFAULT_ARTIFACTS.parent / "checkpoints"


RUNS_SCHEME = "runs:/"
RUN_CHECKPOINT = "checkpoints/model.ckpt"  # the best checkpoint every run logs
RUN_LAST_CHECKPOINT = "checkpoints/last.ckpt"  # the resume checkpoint, uploaded with a server


def local_checkpoint(ref: str | Path, uri: str | None, checkpoint_dir: str | None = None) -> Path:
    """A checkpoint file: a local path as given, or runs:/RUN_ID[/ARTIFACT] downloaded from the
    tracking store `uri` (resolved here, so a bad local path never creates a store) under
    <checkpoint root>/downloads (default artifact: the run's best checkpoint)."""
    ref = str(ref)
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
