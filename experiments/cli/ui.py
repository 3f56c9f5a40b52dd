"""`cxrlab ui`: the MLflow UI on the local store, bound to 127.0.0.1."""

from __future__ import annotations

import argparse


def cmd_ui(ns: argparse.Namespace) -> int:
    """cxrlab ui."""
    from cxrlab.experiments.tracking.ui import run_ui

    return run_ui(ns.host, ns.port, ns.backend_store_uri, ns.optuna, ns.open)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `cxrlab ui`."""
    ui = sub.add_parser("ui", help="start the MLflow UI on the local store (127.0.0.1)")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind; keep 127.0.0.1 unless you mean to share it [default: 127.0.0.1]")
    ui.add_argument("--port", type=int, default=5000, help="port [default: 5000]")
    ui.add_argument("--backend_store_uri", default=None, help="tracking store [default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db]")
    ui.add_argument("--optuna", metavar="STORAGE", default=None, help="also start optuna-dashboard on this Optuna storage (needs optuna-dashboard)")
    ui.add_argument("--open", action="store_true", help="open the newest run's experiment in a web browser")
    ui.set_defaults(func=cmd_ui)
