"""One Optuna trial: suggested params -> config -> training (every fold with data.folds) -> values.

Pruning reads validation metrics: at each epoch end for a single run (a Lightning callback),
after each fold on the running fold mean with k-fold CV. A trial that raises is recorded with
its error (user attr and MLflow tag) and re-raised so Optuna marks it FAIL.
"""

from __future__ import annotations

import copy
import gc
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import optuna
import torch
from mlflow.tracking import MlflowClient

from cxrlab.callbacks.pruning import PruneOnValidation
from cxrlab.config import Config, flatten, from_dict, set_dotted, to_dict
from cxrlab.experiments.sweeps import trial_runs
from cxrlab.experiments.sweeps.search_schema import SearchConfig
from cxrlab.experiments.sweeps.search_space import suggest
from cxrlab.experiments.tracking.writer import RunWriter
from cxrlab.experiments.training.train import resolve, run_tags, train


def fold_summary(per_fold: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """{metric: (mean, std)} over folds for metrics every fold logged (sample std; 0 for one fold)."""
    keys = set.intersection(*(set(m) for m in per_fold)) if per_fold else set()
    out = {}
    for k in sorted(keys):
        v = np.array([m[k] for m in per_fold], dtype=float)
        out[k] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
    return out


def objective_values(metrics: Mapping[str, float], objectives: Sequence[str]) -> list[float]:
    """The objectives' values from a run's metrics, or a ValueError naming what is missing."""
    missing = [o for o in objectives if o not in metrics]
    if missing:
        raise ValueError(
            f"objective(s) {missing} were not logged by the trial (logged: {sorted(metrics)}); "
            "explain/* metrics need explain.enabled: true"
        )
    return [float(metrics[o]) for o in objectives]


@dataclass
class TrialContext:
    """What every trial of one worker shares."""

    spec: SearchConfig
    base_raw: dict[str, Any]  # the YAML (search block dropped) with the command-line overrides
    base_flat: dict[str, Any]  # the validated base config, flattened (for `when` conditions)
    where: str
    client: MlflowClient
    experiment_id: str
    parent_id: str
    study_name: str


def trial_config(ctx: TrialContext, params: Mapping[str, Any], number: int) -> Config:
    """The base config with the trial's params set, validated (a bad combination raises)."""
    raw = copy.deepcopy(ctx.base_raw)
    for key, value in params.items():
        set_dotted(raw, key, value)
    return resolve(from_dict(raw, f"{ctx.where} (trial {number}: {dict(params)})"))


def _trial_tags(ctx: TrialContext, number: int, kind: str = "trial") -> dict[str, str]:
    return {"optuna.study_name": ctx.study_name, "optuna.trial_number": str(number), "cxrlab.kind": kind}


def _fit(cfg: Config, run_id: str, callbacks: Sequence[L.Callback]) -> dict[str, float]:
    result = train(cfg, run_id=run_id, callbacks=callbacks)
    if result.interrupted:
        raise KeyboardInterrupt("training interrupted")
    return result.metrics


def _single(ctx: TrialContext, trial: optuna.Trial, cfg: Config, run_id: str) -> list[float]:
    callbacks = [PruneOnValidation(trial, ctx.spec.objectives[0])] if ctx.spec.pruned else []
    return objective_values(_fit(cfg, run_id, callbacks), ctx.spec.objectives)


def _folds(ctx: TrialContext, trial: optuna.Trial, cfg: Config, run_id: str) -> list[float]:
    """Train every fold in its own run nested under the trial run; prune on running fold means."""
    RunWriter(ctx.client, run_id).log_params(flatten(to_dict(cfg)))
    per_fold: list[dict[str, float]] = []
    means: dict[str, float] = {}
    for fold in range(cfg.data.folds or 0):
        fold_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"fold": fold})})
        tags = run_tags(fold_cfg, _trial_tags(ctx, trial.number, "fold") | {"cxrlab.fold": str(fold)})
        fold_run = trial_runs.start_trial_run(ctx.client, ctx.experiment_id, run_id, f"t{trial.number:03d}-fold{fold}", tags)
        per_fold.append(_fit(fold_cfg, fold_run, ()))
        summary = fold_summary(per_fold)
        _log_summary(ctx, trial, run_id, summary, fold)
        means = {k: m for k, (m, _) in summary.items()}
        if ctx.spec.pruned:
            first = objective_values(means, ctx.spec.objectives[:1])[0]
            trial.report(first, step=fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {fold}: mean {ctx.spec.objectives[0]}={first:.4f}")
    return objective_values(means, ctx.spec.objectives)


def _log_summary(
    ctx: TrialContext, trial: optuna.Trial, run_id: str, summary: Mapping[str, tuple[float, float]], fold: int
) -> None:
    """Mean and std over the folds so far: metrics on the trial run, user attrs for objectives."""
    metrics = {f"cv/{k}/mean": m for k, (m, _) in summary.items()} | {f"cv/{k}/std": s for k, (_, s) in summary.items()}
    RunWriter(ctx.client, run_id).log_metrics(metrics, step=fold, finite_only=True)
    for o in ctx.spec.objectives:
        if o in summary:
            trial.set_user_attr(f"{o} mean", summary[o][0])
            trial.set_user_attr(f"{o} std", summary[o][1])
    trial.set_user_attr("folds_done", fold + 1)


def run_trial(ctx: TrialContext, trial: optuna.Trial) -> float | list[float]:
    """The Optuna objective: one child run (folds nested under it), returns the objective value(s)."""
    # First, so that a launcher whose worker dies from here on finds the trial to re-queue.
    trial.set_user_attr(trial_runs.WORKER_ATTR, trial_runs.worker_label(os.getpid()))
    params = suggest(trial, ctx.spec, ctx.base_flat)
    tags = _trial_tags(ctx, trial.number) | {"optuna.state": "RUNNING"}
    run_id = trial_runs.start_trial_run(ctx.client, ctx.experiment_id, ctx.parent_id, f"t{trial.number:03d}", tags)
    trial.set_user_attr(trial_runs.RUN_ATTR, run_id)
    try:
        cfg = trial_config(ctx, params, trial.number)
        run = RunWriter(ctx.client, run_id)
        run.set_tags(run_tags(cfg, tags))
        run.rename(f"t{trial.number:03d}-{cfg.tracking.run_name}")
        values = _folds(ctx, trial, cfg, run_id) if cfg.data.folds else _single(ctx, trial, cfg, run_id)
        return values[0] if len(values) == 1 else values
    except optuna.TrialPruned:
        raise
    except (KeyboardInterrupt, SystemExit) as e:
        # Lightning turns Ctrl-C into SystemExit; Optuna records KeyboardInterrupt as FAIL and
        # stops. The same parameters are queued again, so resuming the sweep re-runs them.
        trial.set_user_attr(trial_runs.ERROR_ATTR, "interrupted (Ctrl-C); re-queued")
        trial.study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
        trial_runs.finish_trial_run(ctx.client, run_id, "FAIL", {}, "interrupted (Ctrl-C)", status="KILLED")
        raise KeyboardInterrupt("sweep interrupted") from e
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        trial.set_user_attr(trial_runs.ERROR_ATTR, error[:2000])
        raise
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # an OOM trial must not leave its memory to the next one
