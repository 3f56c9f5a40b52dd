"""`cxrlab ui`: the MLflow UI (and optionally optuna-dashboard) on the local store."""

from __future__ import annotations

import shutil
import subprocess
import sys

from cxrlab.experiments.tracking.store import artifact_location, resolve_uri


def ui_command(host: str, port: int, store: str | None) -> list[str]:
    """The mlflow server command line for a store, bound to `host`."""
    uri = resolve_uri(store)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    root = artifact_location(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    return cmd


def run_ui(host: str, port: int, store: str | None, optuna_storage: str | None) -> int:
    """Run the MLflow UI in the foreground (Ctrl-C stops it)."""
    procs = []
    if optuna_storage:
        exe = shutil.which("optuna-dashboard")
        if exe is None:
            raise ValueError("--optuna needs optuna-dashboard: pip install optuna-dashboard")
        procs.append(subprocess.Popen([exe, optuna_storage, "--host", host, "--port", str(port + 1)]))
        print(f"optuna-dashboard on http://{host}:{port + 1}")
    print(f"MLflow UI on http://{host}:{port}  (Ctrl-C to stop)")
    try:
        return subprocess.call(ui_command(host, port, store))
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            p.terminate()
