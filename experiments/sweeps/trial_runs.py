"""MLflow side of a sweep: one parent run per study, one child run per trial, the study report.

Child runs carry `mlflow.parentRunId`, which is all the MLflow UI needs to nest them; the
trial number and final Optuna state are tags, so runs filter as `tags.optuna.state = 'PRUNED'`.
MLflow params cannot change once logged, so what changes between resumed launches (the best
trial) goes into tags, metrics and artifacts.
"""

from __future__ import annotations

import json
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from cxrlab.callbacks import console
from cxrlab.experiments.tracking.store import all_runs
from cxrlab.experiments.tracking.writer import MODEL_ID_TAG, RunWriter

PARENT_ATTR = "mlflow_parent_run_id"
PARENT_URI_ATTR = "mlflow_tracking_uri"
PARENT_PENDING_ATTR = "mlflow_parent_pending"  # set by the launch that created the study until its parent run exists
RUN_ATTR = "mlflow_run_id"
ERROR_ATTR = "error"
WORKER_ATTR = "worker"  # host:pid of the process running the trial, so its launcher finds it
BEST_MODEL_TAG = "cxrlab.best_model_id"  # on the parent run: the best trial's logged model
# Optuna state -> MLflow run status: a pruned trial stopped on purpose, so it "finished".
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}


def open_parent_run(
    client: MlflowClient, study: optuna.Study, experiment_id: str, uri: str, name: str,
    tags: Mapping[str, str], created: bool = True, wait: float = 120.0,
) -> str:
    """The study's parent run: reused when the study already has one in this store, else created.

    Launches started together on several nodes share one parent: the launch that created the
    study creates it, the others wait (up to `wait` s) for it to appear on the study.
    """
    deadline = time.time() + (0.0 if created else wait)
    while time.time() < deadline and study.user_attrs.get(PARENT_PENDING_ATTR) and not study.user_attrs.get(PARENT_ATTR):
        time.sleep(0.5)
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id and study.user_attrs.get(PARENT_URI_ATTR) == uri:
        try:
            if client.get_run(run_id).info.lifecycle_stage == "active":
                RunWriter(client, run_id).reopen()
                return run_id
        except MlflowException:
            pass  # deleted or never in this store: start a fresh parent
    run_id = RunWriter.create(client, experiment_id, name, tags).run_id
    study.set_user_attr(PARENT_ATTR, run_id)
    study.set_user_attr(PARENT_PENDING_ATTR, False)
    study.set_user_attr(PARENT_URI_ATTR, uri)
    return run_id


def worker_label(pid: int) -> str:
    """How a trial names the worker process running it: host:pid."""
    return f"{socket.gethostname()}:{pid}"


def start_trial_run(
    client: MlflowClient, experiment_id: str, parent_id: str, name: str, tags: Mapping[str, str]
) -> str:
    """A run nested under `parent_id` (a study's parent run, or a trial run for its folds); a
    parent that another node's launch already closed is running again while it has children."""
    RunWriter(client, parent_id).reopen()
    return RunWriter.create(client, experiment_id, name, tags, parent_id=parent_id).run_id


def finish_trial_run(
    client: MlflowClient,
    run_id: str,
    state: str,
    values: Mapping[str, float],
    error: str | None,
    status: str | None = None,
) -> None:
    """Tag the final Optuna state (and error), log the objective values, close the run."""
    run = RunWriter(client, run_id)
    run.set_tags({"optuna.state": state} | ({"cxrlab.error": error} if error else {}))
    run.log_metrics({f"optuna/{k}": v for k, v in values.items()}, finite_only=True)
    run.finish(status or RUN_STATUS[state])


def trial_values(trial: FrozenTrial, objectives: tuple[str, ...]) -> dict[str, float]:
    """{objective: value} of a finished trial (empty when it has none)."""
    return dict(zip(objectives, trial.values or (), strict=False))


def trial_run_closer(client: MlflowClient, objectives: tuple[str, ...]) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A study.optimize callback that closes each trial's child run with its final state."""

    def close(study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ATTR)
        values = trial_values(trial, objectives)
        if run_id:
            finish_trial_run(client, run_id, trial.state.name, values, trial.user_attrs.get(ERROR_ATTR))
        console.say(trial_line(trial, values), at=console.QUIET)

    return close


def trial_line(trial: FrozenTrial, values: dict[str, float]) -> str:
    """`trial 3 COMPLETE in 42 s: val/macro_f1 0.851  model.lr=3e-4 ...`: what a sweep prints per trial."""
    took = f" in {trial.duration.total_seconds():.0f} s" if trial.duration else ""
    scores = "  ".join(f"{k} {v:.3f}" for k, v in values.items())
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    error = trial.user_attrs.get(ERROR_ATTR)
    return f"trial {trial.number} {trial.state.name}{took}: {scores or error or ''}  {params}".rstrip()


def stale_run_closer(client: MlflowClient) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A heartbeat-stale callback that closes the dead worker's child run before the re-queue."""

    def close(study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ATTR)
        if run_id:
            error = "worker stopped sending heartbeats (killed?); the trial was re-queued"
            finish_trial_run(client, run_id, "FAIL", {}, error, status="KILLED")

    return close


def close_parent_run(client: MlflowClient, parent_id: str, study: optuna.Study, status: str) -> list[int]:
    """Close the study's parent run once no child run is open; returns the trial numbers still
    RUNNING (on other launches), for which the parent stays open: the last launch closes it.

    A child run whose trial has finished but is still open lost its worker before the worker
    could close it: it is closed as KILLED first.
    """
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    experiment_id = client.get_run(parent_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'"
    still = []
    for run in all_runs(client, [experiment_id], query):
        number = run.data.tags.get("optuna.trial_number")
        if number is not None and int(number) in running:
            still.append(int(number))
            continue
        state = study.trials[int(number)].state.name if number is not None else "FAIL"
        finish_trial_run(client, run.info.run_id, state, {}, "its worker ended without closing the run", status="KILLED")
    if not still:
        RunWriter(client, parent_id).finish(status)
    return sorted(still)


# --------------------------------------------------------------------------- study report


Target = Callable[[FrozenTrial], float] | None


def _targets(study: optuna.Study, objectives: tuple[str, ...]) -> list[tuple[str, str, Target, Target]]:
    """(file suffix, axis name, target, importance target) per objective; one objective needs no
    target. Importances given a target rank params by how low it gets, so a maximised objective
    is negated there."""
    if len(objectives) == 1:
        return [("", objectives[0], None, None)]
    out = []
    for i, o in enumerate(objectives):
        sign = -1.0 if study.directions[i] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        out.append((f"_{o.replace('/', '_')}", o, lambda t, i=i: t.values[i], lambda t, i=i, s=sign: s * t.values[i]))
    return out


def _log_axes(run: RunWriter, ax: Any, name: str) -> None:
    fig = ax.figure if hasattr(ax, "figure") else np.asarray(ax).flat[0].figure
    fig.set_size_inches(9, 6)
    fig.tight_layout()
    run.log_object(fig, f"study/{name}.png")


def _plots(study: optuna.Study, objectives: tuple[str, ...]) -> list[tuple[str, Callable[[], Any]]]:
    """(artifact name, plot thunk) for every figure the study report holds."""
    from optuna.visualization import matplotlib as ovm

    plots: list[tuple[str, Callable[[], Any]]] = []
    for suffix, label, target, lower_better in _targets(study, objectives):
        plots += [
            (f"optimization_history{suffix}", lambda t=target, n=label: ovm.plot_optimization_history(study, target=t, target_name=n)),
            (f"param_importances{suffix}", lambda t=lower_better, n=label: ovm.plot_param_importances(study, target=t, target_name=n)),
            (f"parallel_coordinate{suffix}", lambda t=target, n=label: ovm.plot_parallel_coordinate(study, target=t, target_name=n)),
        ]
    if len(objectives) in (2, 3):
        plots.append(("pareto_front", lambda: ovm.plot_pareto_front(study, target_names=list(objectives))))
    return plots


def report_study(client: MlflowClient, run_id: str, study: optuna.Study, objectives: tuple[str, ...]) -> list[str]:
    """Log the study's outcome on its parent run; returns notes on what was skipped and why."""
    run = RunWriter(client, run_id)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    run.log_metrics({f"trials/{k.lower()}": v for k, v in counts.items()}, step=len(trials), finite_only=True)
    notes: list[str] = []
    if trials:
        run.log_object(study.trials_dataframe(multi_index=False), "study/trials.csv")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        notes.append("no COMPLETE trial yet: no best trial, no figures")
    elif len(objectives) == 1:
        best = study.best_trial
        run.set_tags({"best_trial.number": best.number} | {f"best_trial.params.{k}": v for k, v in best.params.items()})
        run.log_metrics({f"best/{objectives[0]}": best.value}, step=len(trials), finite_only=True)
        summary = {"number": best.number, "params": best.params, "values": trial_values(best, objectives)}
        run.log_object(json.dumps(summary, indent=2, default=str).encode(), "study/best_trial.json")
    else:
        front = study.best_trials
        rows = [{"number": t.number, **trial_values(t, objectives), **t.params} for t in front]
        run.log_object(json.dumps(rows, indent=2, default=str).encode(), "study/pareto_trials.json")
        run.log_metrics({"pareto/size": len(front)}, step=len(trials), finite_only=True)
    if complete:
        notes += _log_plots(run, study, objectives, len(complete))
    if notes:
        run.log_object(("\n".join(notes) + "\n").encode(), "study/notes.txt")
    return notes


def tag_best_model(client: MlflowClient, parent_id: str, study: optuna.Study) -> str | None:
    """Tag the parent run with the logged model of the best trial (cxrlab.best_model_id) and return
    its id; None for a multi-objective study, no COMPLETE trial, or a trial without one model
    (k-fold trials log one per fold)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete or len(study.directions) > 1:
        return None
    run_id = study.best_trial.user_attrs.get(RUN_ATTR)
    model_id = client.get_run(run_id).data.tags.get(MODEL_ID_TAG) if run_id else None
    if model_id:
        RunWriter(client, parent_id).set_tags({BEST_MODEL_TAG: model_id})
    return model_id


def _log_plots(run: RunWriter, study: optuna.Study, objectives: tuple[str, ...], n_complete: int) -> list[str]:
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*importances of params to achieve low `target`")
        for name, plot in _plots(study, objectives):
            if name.startswith("param_importances") and n_complete < 2:
                notes.append(f"{name}: skipped, importances need more than one COMPLETE trial")
                continue
            try:
                _log_axes(run, plot(), name)
            except (ValueError, RuntimeError) as e:
                notes.append(f"{name}: skipped ({e})")
    return notes
