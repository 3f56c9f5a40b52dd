"""A dead sweep worker's trials: failed and re-queued by its launcher as soon as it dies.

The launcher knows its workers' pids; each trial records the `host:pid` of the worker running
it, so the launcher finds the trials a dead worker left RUNNING without waiting for heartbeats.
"""

from __future__ import annotations

import signal
import socket

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from cxrlab.experiments.sweeps import trial_runs
from cxrlab.experiments.sweeps.storage import fail_and_requeue
from cxrlab.experiments.tracking.liveness import process_alive


def describe_exit(code: int) -> str:
    """A worker's exit code in words: 'killed by SIGKILL', 'exit code 1'."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def recover_trials(study: optuna.Study, client: MlflowClient, pid: int, why: str) -> list[int]:
    """Fail the RUNNING trials of dead worker `pid` (this host), close their MLflow runs as KILLED
    and re-queue them (within search.heartbeat.max_retry); returns the re-queued trials' numbers."""
    label = trial_runs.worker_label(pid)
    requeued = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(trial_runs.WORKER_ATTR) != label:
            continue
        run_id = trial.user_attrs.get(trial_runs.RUN_ATTR)
        if fail_and_requeue(study, trial._trial_id) is None:
            continue  # another process failed it first (its heartbeat went stale)
        # Optuna's retry callback records the chain in the new trial (unless max_retry is spent).
        retried = any(
            trial.number in t.system_attrs.get("retry_history", ()) for t in study.get_trials(deepcopy=False)
        )
        if run_id:
            fate = "the trial was re-queued" if retried else "re-queue limit reached (search.heartbeat.max_retry)"
            trial_runs.finish_trial_run(client, run_id, "FAIL", {}, f"{why}; {fate}", status="KILLED")
        if retried:
            requeued.append(trial.number)
    return requeued


def recover_dead_workers(study: optuna.Study, client: MlflowClient) -> list[int]:
    """At a launch's start: the RUNNING trials whose worker on this host is gone (its launcher was
    killed with it) are failed and re-queued at once, not after the heartbeat grace."""
    host = socket.gethostname() + ":"
    pids = {
        int(label.removeprefix(host))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if (label := trial.user_attrs.get(trial_runs.WORKER_ATTR, "")).startswith(host)
    }
    requeued = []
    for pid in sorted(pids):
        if not process_alive(pid):
            requeued += recover_trials(study, client, pid, f"its worker (pid {pid}) is gone and sends no heartbeats")
    return requeued
