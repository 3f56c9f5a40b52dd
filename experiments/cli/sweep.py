"""`cxrlab sweep` and `cxrlab sweep status` (the command line; the launcher lives in cxrlab.experiments.sweeps.runner)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cxrlab.config import ConfigError
from cxrlab.experiments.cli.flags import (
    add_common_flags,
    add_config_flags,
    config_path,
    overrides_from,
)

USAGE = """cxrlab sweep --config FILE [--n_trials N] [--timeout S] [--study_name NAME] [--storage URL]
                    [--workers K] [--gpus IDS] [--SECTION.KEY VALUE ...]
       cxrlab sweep status --study_name NAME [--storage URL]"""

DESCRIPTION = """\
Run an Optuna study over a training config. The YAML is a training config plus a search: block
(parameters, sampler, pruner, objectives; see experiments/configs/phantom_sweep.yaml). Every
trial is one nested MLflow run under the study's parent run. Re-running the same command
resumes the study by name; trial numbers continue. Ctrl-C stops cleanly and re-queues the
interrupted trials.

  cxrlab sweep --config phantom_sweep --data.root data/phantom --n_trials 8 --workers 2
  cxrlab sweep --config sweep_backbones --data.root /data/kth --gpus 0,1,2,3
  cxrlab sweep status --study_name phantom_sweep

Every config key below is also a flag; it applies to every trial (searched keys cannot be set).
"""


def cmd_sweep(ns: argparse.Namespace) -> int:
    """cxrlab sweep."""
    from cxrlab.config import load_config
    from cxrlab.config.secrets import refuse_password

    if ns.config is None:
        raise ConfigError("cxrlab sweep needs --config FILE (e.g. experiments/configs/phantom_sweep.yaml)")
    refuse_password(ns.storage, "--storage")
    # The training part of the config first: a typo is reported before Optuna, torch and MLflow load.
    load_config(config_path(ns.config), overrides_from(ns), extra_sections=("search",))
    from cxrlab.experiments.sweeps.runner import run_sweep

    outcome = run_sweep(
        config_path(ns.config), overrides_from(ns), n_trials=ns.n_trials, timeout=ns.timeout,
        study_name=ns.study_name, storage=ns.storage, workers=ns.workers, gpus=ns.gpus,
    )
    if outcome.parent_run_id:
        print(f"  MLflow parent run: {outcome.parent_run_id}")
        print(f"  runs:              {outcome.link}")
    if outcome.interrupted:
        print("cxrlab sweep: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    # A worker killed by a signal was reported, its trial re-queued and replaced; one that exited
    # with an error is a failure of the launch.
    failed = [c for c in outcome.worker_exit_codes if c > 0 and c != 130]
    return 1 if failed else 0


def cmd_status(ns: argparse.Namespace) -> int:
    """cxrlab sweep status."""
    from cxrlab.config.secrets import refuse_password

    refuse_password(ns.storage, "--storage")
    from cxrlab.experiments.sweeps.status import format_status, load_existing_study

    print(format_status(load_existing_study(ns.study_name, ns.storage)))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return value


def add_parser(subparsers: Any) -> None:
    """Register `cxrlab sweep` and `cxrlab sweep status`."""
    p = subparsers.add_parser(
        "sweep", help="Optuna sweep over a config (nested MLflow runs, K workers)", usage=USAGE,
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", metavar="FILE", help="sweep YAML (training config + search: block), or a shipped one's name")
    p.add_argument("--n_trials", type=_positive_int, metavar="N", help="new trials in this launch, across all workers [default: search.n_trials; a grid: the points not yet run]")
    p.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds [default: none]")
    p.add_argument("--study_name", metavar="NAME", help="Optuna study name; the same name resumes it [default: search.study_name, else the config file's stem]")
    p.add_argument("--storage", metavar="URL", help="journal file path, sqlite:///FILE (one worker) or postgresql://USER@HOST/DB, its password in ~/.pgpass or PGPASSWORD, never in the URL [default: mlruns/optuna/<study>.journal]")
    p.add_argument("--workers", type=_positive_int, metavar="K", help="worker processes on the same study [default: one per GPU in --gpus, else 1]")
    p.add_argument("--gpus", default="auto", metavar="IDS", help="GPU ids for the workers, round-robin (0,1,2,3); none = CPU only [default: auto = every visible GPU]")
    add_common_flags(p, "quiet", "verbose")
    add_config_flags(p)
    p.set_defaults(func=cmd_sweep)
    sub = p.add_subparsers(dest="sweep_command", title="subcommands", metavar="status")
    s = sub.add_parser(
        "status", help="trials by state, best so far, ETA",
        description="Show a study's trials by state, the best trial (or Pareto front) so far and the ETA.",
    )
    s.add_argument("--study_name", required=True, metavar="NAME", help="the study to show")
    s.add_argument("--storage", metavar="URL", help="where the study lives [default: mlruns/optuna/<study>.journal]")
    s.set_defaults(func=cmd_status)
