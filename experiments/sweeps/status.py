"""`cxrlab sweep status`: a study's trials by state, the best trial(s) so far, and the ETA."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from cxrlab.config.secrets import redact
from cxrlab.experiments.sweeps.storage import default_storage, open_storage

# Study user attr: the latest launch's start, trial target, timeout, workers (and end, when over).
LAUNCH_ATTR = "launch"


def _duration(t: FrozenTrial) -> float | None:
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return (t.datetime_complete - t.datetime_start).total_seconds()


def eta_seconds(study: optuna.Study, now: float | None = None) -> float | None:
    """Seconds until the latest launch's trial budget or timeout runs out (None: unknown, or over)."""
    launch = study.user_attrs.get(LAUNCH_ATTR)
    if not launch or launch.get("ended"):
        return None
    now = time.time() if now is None else now
    trials = study.get_trials(deepcopy=False)
    estimates = []
    if launch.get("timeout"):
        estimates.append(max(0.0, launch["started"] + launch["timeout"] - now))
    durations = [d for t in trials if t.state.is_finished() and (d := _duration(t)) is not None]
    if launch.get("target") is not None and durations:
        left = max(0, launch["target"] - sum(t.state.is_finished() for t in trials))
        estimates.append(left * (sum(durations) / len(durations)) / max(1, launch.get("workers", 1)))
    return min(estimates) if estimates else None


def format_status(study: optuna.Study) -> str:
    """Trials by state, the best trial(s) so far and the ETA, as text."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    objectives = study.user_attrs.get("objectives") or [f"value{i}" for i in range(len(study.directions))]
    lines = [f"study {study.study_name}: {len(trials)} trial(s): " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        lines.append("  best: none yet (no COMPLETE trial)")
    elif len(study.directions) == 1:
        b = study.best_trial
        lines.append(f"  best: trial {b.number}  {objectives[0]}={b.value:.4f}  {b.params}")
    else:
        lines.append(f"  Pareto front: {len(study.best_trials)} trial(s)")
        for b in study.best_trials:
            values = "  ".join(f"{o}={v:.4f}" for o, v in zip(objectives, b.values, strict=False))
            lines.append(f"    trial {b.number}  {values}  {b.params}")
    launch = study.user_attrs.get(LAUNCH_ATTR) or {}
    eta = eta_seconds(study)
    if launch.get("interrupted"):
        lines.append(f"  ETA: stopped by Ctrl-C; run the sweep again to resume ({counts['WAITING']} re-queued)")
    elif launch.get("ended") and not counts["RUNNING"]:
        lines.append("  ETA: done")
    elif eta is None:
        lines.append("  ETA: unknown (no trial budget or timeout recorded, or no finished trial yet)")
    else:
        lines.append(f"  ETA: ~{eta / 60:.1f} min ({counts['RUNNING']} running)")
    if launch:
        started = datetime.fromtimestamp(launch["started"]).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"  last launch: {started} on {launch.get('host')}, {launch.get('workers')} worker(s)")
    return "\n".join(lines)


def load_existing_study(study_name: str, storage: str | None) -> optuna.Study:
    """A study by name, or a ValueError listing the studies the storage holds."""
    storage = storage or default_storage(study_name)
    if "://" not in storage and not Path(storage).is_file():
        raise ValueError(f"--storage {storage}: no such journal file; pass the storage the sweep used")
    opened = open_storage(storage)
    names = optuna.get_all_study_names(storage=opened)
    if study_name not in names:
        raise ValueError(f"study {study_name!r} is not in {redact(storage)}; studies there: {names}")
    return optuna.load_study(study_name=study_name, storage=opened)
