"""`cxrlab ui`: the MLflow UI (and optionally optuna-dashboard) on the local store, and the links
into it that every command prints.

MLflow 3 opens an experiment in its GenAI view (traces, sessions, judges) unless the link says
`workflowType=machine_learning`; a link without it lands a user of cxrlab on an empty traces page.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import webbrowser

from cxrlab.experiments.tracking.store import artifact_location, is_server, resolve_uri

UI_HOST, UI_PORT = "127.0.0.1", 5000
TRAINING_VIEW = "workflowType=machine_learning"


def ui_link(uri: str, experiment_id: str | None = None, run_id: str | None = None, base: str | None = None) -> str:
    """The UI's page of a run, or of an experiment's runs table, in the training view: on the
    server itself for a tracking server, else where `cxrlab ui` serves a local store."""
    if base is None:
        base = uri if is_server(uri) and uri.startswith("http") else f"http://{UI_HOST}:{UI_PORT}"
    page = "experiments" if experiment_id is None else f"experiments/{experiment_id}"
    if experiment_id is not None and run_id is not None:
        page += f"/runs/{run_id}"
    return f"{base.rstrip('/')}/#/{page}?{TRAINING_VIEW}"


def newest_run_link(uri: str, base: str) -> str:
    """The runs table of the experiment that holds the store's newest run (the experiment list
    when the store has no run yet)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1, order_by=["attributes.start_time DESC"]) if experiments else []
    return ui_link(uri, runs[0].info.experiment_id if runs else None, base=base)


def ui_command(host: str, port: int, store: str | None) -> list[str]:
    """The mlflow server command line for a store, bound to `host`."""
    uri = resolve_uri(store)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    root = artifact_location(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    return cmd


def wait_until_up(base: str, seconds: float = 60) -> bool:
    """Whether the UI at `base` answers its health check within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _announce(base: str, link: str, open_browser: bool) -> None:
    """Print the link once the UI answers (and open it in a browser when asked)."""
    wait_until_up(base)
    print(f"MLflow UI: {link}", flush=True)
    if open_browser:
        webbrowser.open(link)


def run_ui(host: str, port: int, store: str | None, optuna_storage: str | None, open_browser: bool = False) -> int:
    """Run the MLflow UI in the foreground (Ctrl-C stops it); print the newest run's experiment link."""
    procs = []
    if optuna_storage:
        exe = shutil.which("optuna-dashboard")
        if exe is None:
            raise ValueError("--optuna needs optuna-dashboard: pip install optuna-dashboard")
        procs.append(subprocess.Popen([exe, optuna_storage, "--host", host, "--port", str(port + 1)]))
        print(f"optuna-dashboard on http://{host}:{port + 1}")
    uri = resolve_uri(store)
    base = f"http://{host}:{port}"
    print(f"MLflow UI on {base}  (Ctrl-C to stop)", flush=True)
    link = newest_run_link(uri, base)
    threading.Thread(target=_announce, args=(base, link, open_browser), daemon=True).start()
    try:
        return subprocess.call(ui_command(host, port, uri))
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            p.terminate()
