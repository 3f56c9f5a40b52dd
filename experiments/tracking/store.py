"""The MLflow store: its URI, the SQLite lock, experiments and where checkpoints live (writes: writer.py)."""

from __future__ import annotations

import functools
import os
import re
import time
from pathlib import Path
from typing import Any

from cxrlab.config import first_line

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACTS = Path("mlruns/artifacts")
# MLflow 3.x opens every experiment without this tag in its GenAI view (traces, prompts).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class StoreError(ValueError):
    """A tracking store that cannot be used as it is (printed as one line by the CLI)."""


@functools.cache
def ready_sqlite_store(db: str) -> None:
    """Create (or check) the SQLite store `db` under a file lock beside it, once per process.

    MLflow creates its tables and runs its migrations on first use without a lock: two
    processes starting on a new store at once both migrate and leave it half-built.
    """
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    try:
        lock = FileLock(f"{db}.lock")
        lock.acquire()
    except OSError as err:  # a read-only folder or file system: not even the lock can be made
        raise read_only(db, err) from None
    try:
        if not Path(db).exists():
            # Built under another name and renamed into place: a process killed while MLflow
            # creates the tables leaves a stray temp file, never a half-built store.
            for stale in Path(db).parent.glob(f".{Path(db).name}.*.building"):  # killed builders' (we hold the lock)
                stale.unlink()
            building = Path(db).with_name(f".{Path(db).name}.{os.getpid()}.building")
            MlflowClient(f"sqlite:///{building}").search_experiments(max_results=1)
            os.replace(building, db)
        MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    except Exception as err:  # alembic, sqlalchemy and MLflow errors of a broken schema
        if "readonly" in str(err).lower() or "read-only" in str(err).lower():
            raise read_only(db, err) from None
        raise StoreError(
            f"{db}: the MLflow store is half-created or damaged ({first_line(err)}); if it holds no runs you "
            f"need, delete it (rm {db}) and run again, else try: mlflow db upgrade sqlite:///{db}"
        ) from err
    finally:
        lock.release()
    if not os.access(db, os.W_OK):
        raise read_only(db, PermissionError("the database file is not writable"))


def read_only(db: Path | str, err: BaseException) -> StoreError:
    """The one line for a local store that cannot be written."""
    return StoreError(
        f"sqlite:///{db}: the MLflow store cannot be written ({first_line(err)}); make {Path(db).parent} "
        "writable, or record elsewhere with --tracking_uri sqlite:///WRITABLE/PATH/mlflow.db (or MLFLOW_TRACKING_URI)"
    )


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI: explicit, else $MLFLOW_TRACKING_URI, else the local SQLite store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///"):
        # Absolute, because MLflow caches one store per URI string: a relative URI would keep
        # pointing at the first working directory's database (and checkpoints store the URI).
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise read_only(db, err) from None
        uri = f"sqlite:///{db}"
        ready_sqlite_store(str(db))
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    if uri.startswith("file:") or ("://" not in uri and uri != "databricks"):
        raise ValueError(
            f"tracking uri {uri!r}: MLflow 3 no longer accepts file stores; use "
            f"{DEFAULT_URI} (the default), another sqlite:/// path, or an http(s):// server"
        )
    return uri


# MLflow retries a server's 5xx answers and dropped connections; bounded here to about half a
# minute (1 + 2 + 4 + 8 + 16 s) instead of its default of several minutes.
SERVER_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@functools.cache
def check_server(uri: str, attempts: int = 4) -> None:
    """Fail in one line, naming the URI, when the MLflow server does not answer its health check
    (after retries with backoff: a server that is still starting gets about 8 seconds)."""
    import urllib.error
    import urllib.request

    for key, value in SERVER_RETRIES.items():
        os.environ.setdefault(key, value)
    why = ""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as answer:
                if answer.status == 200:
                    return
                why = f"HTTP {answer.status}"
        except urllib.error.HTTPError as err:
            why = f"HTTP {err.code} {err.reason}"
            if err.code < 500:
                break  # not transient: a proxy, a wrong path, a login
        except (urllib.error.URLError, OSError) as err:
            why = first_line(getattr(err, "reason", err) if isinstance(err, urllib.error.URLError) else err)
        if attempt < attempts - 1:
            time.sleep(0.5 * 2**attempt)
    raise StoreError(
        f"{uri}: the MLflow server does not answer ({why}); start it (mlflow server, or cxrlab ui for a local "
        "store) or fix --tracking_uri / MLFLOW_TRACKING_URI"
    )


def artifact_location(uri: str) -> str | None:
    """Artifact root for new experiments: mlruns/artifacts beside a local SQLite store."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "artifacts").resolve().as_uri()
    return None  # a tracking server decides


def is_server(uri: str) -> bool:
    """Whether `uri` is a tracking server (artifacts travel over HTTP, not a shared disk)."""
    return uri.startswith(("http://", "https://", "databricks"))


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """The id of experiment `name`, created (with our artifact root and tags) if missing; when
    another process creates it at the same moment, that one is used."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri), tags=EXPERIMENT_TAGS)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # lost the race: the winner's experiment
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) "
            "or choose another tracking.experiment"
        )
    return exp.experiment_id


def all_runs(
    client: Any, experiment_ids: list[str], filter_string: str = "", order_by: list[str] | None = None,
    page_size: int = 1000,
) -> list[Any]:
    """Every run that matches, page after page: one search returns at most a page, and a store
    of a long sweep holds more runs than any single page."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=page_size, order_by=order_by, page_token=token
        )
        runs += page
        token = page.token
        if not token:
            return runs


RUN_ID = re.compile(r"[0-9a-f]{32}")
MIN_PREFIX = 6


def resolve_run_id(client: Any, ref: str) -> str:
    """A full run id from `ref`: a whole id, or (as git takes commits) a unique prefix of 6 or
    more characters; an ambiguous or unknown prefix is a one-line error listing what matched."""
    if RUN_ID.fullmatch(ref) or not re.fullmatch(rf"[0-9a-f]{{{MIN_PREFIX},31}}", ref):
        return ref  # a whole id, or not an id at all: the caller's lookup says what is wrong
    experiments = [e.experiment_id for e in client.search_experiments()]
    matches = sorted(r.info.run_id for r in (all_runs(client, experiments) if experiments else [])
                     if r.info.run_id.startswith(ref))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"run {ref!r} not found in the tracking store (no run id starts with it); check the id and --tracking_uri")
    shown = ", ".join(m[:12] for m in matches[:8]) + (f" and {len(matches) - 8} more" if len(matches) > 8 else "")
    raise ValueError(f"{ref}: the run id prefix is ambiguous ({shown}); give more characters")


def experiment_of(client: Any, run_id: str | None) -> str | None:
    """The experiment id of a run this store knows, else None (e.g. trained against another store)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id).info.experiment_id
    except MlflowException:
        return None
