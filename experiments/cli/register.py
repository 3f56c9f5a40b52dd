"""The `cxrlab register` command line: a run's logged model as a new version of a registered model."""

from __future__ import annotations

import argparse
from typing import Any

from cxrlab.experiments.cli.flags import add_common_flags


def cmd_register(ns: argparse.Namespace) -> int:
    """cxrlab register."""
    from cxrlab.experiments.evaluation.compare import register_run
    from cxrlab.experiments.tracking import store

    print(register_run(store.resolve_uri(ns.tracking_uri), ns.ref, ns.name, ns.alias))
    return 0


def add_parser(subparsers: Any) -> None:
    """Register `cxrlab register`."""
    p = subparsers.add_parser(
        "register",
        help="register a training run's model in the MLflow model registry (versions, aliases)",
        description="Register the MLflow logged model of a training run (the best checkpoint `cxrlab train` "
        "logs as a pyfunc) as a new version of registered model NAME, and move --alias to it. "
        "evaluate, predict and explain then take models:/NAME@ALIAS or models:/NAME/VERSION, and "
        "`mlflow models serve -m models:/NAME@ALIAS` serves it.",
    )
    p.add_argument("ref", metavar="RUN_ID|MODEL_ID",
                   help="a training run id (or a unique prefix of 6+ characters), or a logged model id (m-...)")
    p.add_argument("--name", required=True, help="the registered model's name (created on first use)")
    p.add_argument("--alias", default=None,
                   help="move this alias (e.g. champion) to the new version [default: no alias]")
    add_common_flags(p, "tracking_uri")
    p.set_defaults(func=cmd_register)
