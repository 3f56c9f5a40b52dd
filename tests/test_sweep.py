"""Sweeps end to end: real Optuna storages, real (tiny) training, real MLflow runs.

Every trial trains a ResNet-18 for one epoch of two 32x32 batches (no explanations), so a trial
costs seconds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from cxrlab.experiments.cli.main import build_parser, main
from cxrlab.experiments.sweeps.runner import absolute_uri, run_sweep
from cxrlab.experiments.sweeps.status import LAUNCH_ATTR, eta_seconds, format_status
from cxrlab.experiments.sweeps.storage import default_storage, open_storage
from cxrlab.experiments.sweeps.trial_runs import PARENT_ATTR, RUN_ATTR
from cxrlab.experiments.tracking import store

CI_TINY = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "ci_tiny.yaml"
MLP = {"model.head": ["gap-linear", "gap-mlp"], "model.hidden": {"values": [8, 16], "when": {"model.head": ["gap-mlp"]}}}


def sweep_yaml(path: Path, search: dict[str, Any], **base: Any) -> Path:
    """ci_tiny + a search block; `base` sets dotted keys of the training config."""
    raw = yaml.safe_load(CI_TINY.read_text())
    settings = {
        "data.split": [0.7, 0.3], "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 1,
        "tracking.log_checkpoint": False, "tracking.experiment": "sweep-tests", "explain.enabled": False,
    } | base
    for key, value in settings.items():
        section, _, leaf = key.rpartition(".")
        node = raw
        for part in section.split("."):
            node = node.setdefault(part, {})
        node[leaf] = value
    raw["search"] = search
    path.write_text(yaml.safe_dump(raw))
    return path


def mlflow() -> MlflowClient:
    """A client on this test's store (cwd's mlruns/; absolute: MLflow caches stores by URI)."""
    return MlflowClient(absolute_uri(store.resolve_uri()))


def children(parent: str) -> list[Any]:
    """The child runs of a parent run."""
    exp = mlflow().get_run(parent).info.experiment_id
    return mlflow().search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=100)


def artifacts(run_id: str, path: str = "study") -> set[str]:
    """Artifact paths of a run under `path`."""
    return {a.path for a in mlflow().list_artifacts(run_id, path)}


def load(name: str, storage: str | None = None) -> optuna.Study:
    """A study from the default journal (or `storage`)."""
    return optuna.load_study(study_name=name, storage=open_storage(storage or default_storage(name)))


def test_two_workers_then_resume_keeps_numbering(
    in_tmp_cwd: Path, folder_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two trials on two workers: each worker claims one trial slot as it starts, so both run one.
    config = sweep_yaml(in_tmp_cwd / "tiny_sweep.yaml", {"sampler": "random", "n_trials": 2, "params": MLP})
    overrides = {"data.root": str(folder_tree), "model.lr": "0.002"}
    first = run_sweep(config, overrides, workers=2, gpus="none")
    assert first.worker_exit_codes == [0, 0] and not first.interrupted
    study = load("tiny_sweep")
    assert [t.number for t in study.trials] == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both processes ran trials
    assert study.user_attrs[PARENT_ATTR] == first.parent_run_id
    runs = children(first.parent_run_id)
    assert sorted(r.data.tags["optuna.trial_number"] for r in runs) == ["0", "1"]
    assert {r.info.run_id for r in runs} == {t.user_attrs[RUN_ATTR] for t in study.trials}
    for r in runs:
        assert r.data.tags["optuna.state"] == "COMPLETE" and r.info.status == "FINISHED"
        assert r.data.params["model.lr"] == "0.002"  # the override reached every trial
        trial = study.trials[int(r.data.tags["optuna.trial_number"])]
        assert r.data.params["model.head"] == trial.params["model.head"]
        assert r.data.metrics["optuna/val/macro_f1"] == pytest.approx(trial.value)
    assert {"study/trials.csv", "study/best_trial.json", "study/optimization_history.png",
            "study/param_importances.png", "study/parallel_coordinate.png"} <= artifacts(first.parent_run_id)

    second = run_sweep(config, overrides, workers=1, gpus="none")
    assert second.parent_run_id == first.parent_run_id and second.new_trials == 2
    study = load("tiny_sweep")
    assert [t.number for t in study.trials] == list(range(4))
    assert len(children(first.parent_run_id)) == 4

    capsys.readouterr()
    assert main(["sweep", "status", "--study_name", "tiny_sweep"]) == 0
    out = capsys.readouterr().out
    assert "4 trial(s): COMPLETE 4" in out and f"best: trial {study.best_trial.number}" in out and "ETA: done" in out


def test_forced_pruner_prunes(in_tmp_cwd: Path, folder_tree: Path) -> None:
    # macro-F1 never reaches 2, so the threshold pruner prunes at the first report (epoch 0 of 3).
    search = {"sampler": "random", "n_trials": 2, "pruner": {"name": "threshold", "lower": 2.0}, "params": MLP}
    config = sweep_yaml(in_tmp_cwd / "prune.yaml", search, **{"data.root": str(folder_tree), "trainer.max_epochs": 3})
    outcome = run_sweep(config, gpus="none")
    study = load("prune")
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(list(t.intermediate_values) == [0] for t in study.trials)
    runs = children(outcome.parent_run_id)
    assert [r.data.tags["optuna.state"] for r in runs] == ["PRUNED", "PRUNED"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "study/notes.txt" in artifacts(outcome.parent_run_id)  # no COMPLETE trial: no figures


def test_grid_on_sqlite_covers_every_point_once_and_failed_trials_do_not_stop_it(
    in_tmp_cwd: Path, folder_tree: Path
) -> None:
    # lr = 1e30 blows the weights up: the second step's loss is NaN -> FloatingPointError -> FAIL.
    grid = {"model.head": ["gap-linear", "gap-mlp"], "model.lr": [3.0e-3, 1.0e30]}
    config = sweep_yaml(in_tmp_cwd / "grid.yaml", {"sampler": "grid", "params": grid}, **{"data.root": str(folder_tree)})
    storage = "sqlite:///grid_study.db"
    outcome = run_sweep(config, storage=storage, gpus="none")
    study = load("grid", storage)
    assert len(study.trials) == 4 and outcome.new_trials == 4
    assert sorted((t.params["model.head"], t.params["model.lr"]) for t in study.trials) == sorted(
        itertools.product(grid["model.head"], grid["model.lr"])
    )
    for t in study.trials:
        if t.params["model.lr"] > 1:
            assert t.state == TrialState.FAIL
            assert t.user_attrs["error"].startswith("FloatingPointError: non-finite training loss")
        else:
            assert t.state == TrialState.COMPLETE
    runs = {r.data.tags["optuna.trial_number"]: r for r in children(outcome.parent_run_id)}
    for t in study.trials:
        r = runs[str(t.number)]
        assert r.data.tags["optuna.state"] == t.state.name
        assert r.info.status == ("FAILED" if t.state == TrialState.FAIL else "FINISHED")
        assert ("cxrlab.error" in r.data.tags) == (t.state == TrialState.FAIL)
    again = run_sweep(config, storage=storage, gpus="none")  # the grid is done: nothing to run
    assert again.new_trials == 0 and len(load("grid", storage).trials) == 4


def test_multi_objective_gives_a_pareto_front_and_is_not_pruned(in_tmp_cwd: Path, folder_tree: Path) -> None:
    search = {
        "sampler": {"name": "nsga2", "population_size": 2}, "n_trials": 2, "pruner": "median",
        "objectives": ["val/macro_f1", "val/loss"], "params": MLP | {"model.lr": {"low": 1e-3, "high": 1e-2, "log": True}},
    }
    config = sweep_yaml(in_tmp_cwd / "pareto.yaml", search, **{"data.root": str(folder_tree)})
    outcome = run_sweep(config, gpus="none")
    assert "pruning is off: multi-objective studies cannot be pruned" in outcome.notes
    study = load("pareto")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 and not t.intermediate_values for t in study.trials)
    got = artifacts(outcome.parent_run_id)
    assert {"study/pareto_front.png", "study/pareto_trials.json", "study/optimization_history_val_loss.png"} <= got
    front = mlflow().get_run(outcome.parent_run_id).data.metrics["pareto/size"]
    assert front == len(study.best_trials) >= 1


def test_kfold_trial_trains_every_fold_and_reports_fold_means(in_tmp_cwd: Path, folder_tree: Path) -> None:
    search = {"sampler": "random", "n_trials": 1, "params": {"model.head": ["gap-linear"]}}
    config = sweep_yaml(in_tmp_cwd / "folds.yaml", search, **{"data.root": str(folder_tree), "data.folds": 2})
    outcome = run_sweep(config, gpus="none")
    (trial,) = load("folds").trials
    (trial_run,) = children(outcome.parent_run_id)
    folds = sorted(children(trial_run.info.run_id), key=lambda r: r.data.tags["cxrlab.fold"])
    assert [r.data.params["data.fold"] for r in folds] == ["0", "1"]
    per_fold = [r.data.metrics["best/val/macro_f1"] for r in folds]
    mean, std = sum(per_fold) / 2, abs(per_fold[0] - per_fold[1]) / 2**0.5
    assert trial.value == pytest.approx(mean)
    assert trial.user_attrs["val/macro_f1 mean"] == pytest.approx(mean)
    assert trial.user_attrs["val/macro_f1 std"] == pytest.approx(std)
    # Pruning sees the running fold mean: fold 0 alone, then the mean of both.
    assert trial.intermediate_values == pytest.approx({0: per_fold[0], 1: mean})
    assert trial_run.data.metrics["cv/val/macro_f1/mean"] == pytest.approx(mean)
    assert trial_run.data.metrics["cv/val/macro_f1/std"] == pytest.approx(std)


def test_stale_trial_of_a_dead_worker_is_requeued(in_tmp_cwd: Path, folder_tree: Path) -> None:
    """What a killed worker leaves (a RUNNING trial whose heartbeats stopped) is failed and re-run."""
    search = {"sampler": "random", "params": MLP, "heartbeat": {"interval": 1, "grace": 2}}
    config = sweep_yaml(in_tmp_cwd / "stale.yaml", search, **{"data.root": str(folder_tree)})
    storage = open_storage(default_storage("stale"), 1, 2)
    study = optuna.create_study(study_name="stale", storage=storage, direction="maximize")
    dead = study.ask({"model.head": optuna.distributions.CategoricalDistribution(["gap-linear", "gap-mlp"])})
    storage.record_heartbeat(dead._trial_id)
    time.sleep(3)
    run_sweep(config, n_trials=1, gpus="none")
    trials = load("stale").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params["model.head"] == trials[0].params["model.head"]
    assert trials[1].system_attrs["failed_trial"] == 0


def test_cli_help_explains_every_flag_and_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = build_parser()._subparsers._group_actions[0].choices["sweep"]
    status = sweep._subparsers._group_actions[0].choices["status"]
    for parser in (sweep, status):
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{action.option_strings} has no help"
    flags = {o for a in sweep._actions for o in a.option_strings}
    assert {"--config", "--n_trials", "--timeout", "--study_name", "--storage", "--workers", "--gpus"} <= flags
    assert {"--model.backbone", "--data.root", "--trainer.max_epochs"} <= flags  # the dotted overrides
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--help"])
    assert exit_info.value.code == 0 and "cxrlab sweep status --study_name NAME" in capsys.readouterr().out
    assert main(["sweep"]) == 2
    assert "cxrlab sweep needs --config FILE" in capsys.readouterr().err
    config = sweep_yaml(tmp_path / "clash.yaml", {"n_trials": 1, "params": MLP})
    assert main(["sweep", "--config", str(config), "--model.head", "gap-linear"]) == 2
    assert "model.head searched in search.params; drop the override" in capsys.readouterr().err
    unbounded = sweep_yaml(tmp_path / "unbounded.yaml", {"params": MLP})
    storage = tmp_path / "unbounded.journal"
    assert main(["sweep", "--config", str(unbounded), "--storage", str(storage)]) == 2
    assert "set search.n_trials, --n_trials or --timeout" in capsys.readouterr().err and not storage.exists()
    assert main(["sweep", "status", "--study_name", "nope", "--storage", str(tmp_path / "none.journal")]) == 2
    assert "no such journal file" in capsys.readouterr().err


def test_status_counts_best_and_eta() -> None:
    study = optuna.create_study(direction="maximize")
    start = datetime(2026, 1, 1, 12, 0, 0)
    dist = {"model.head": optuna.distributions.CategoricalDistribution(["gap-linear", "gap-mlp"])}
    for i, (state, value) in enumerate([(TrialState.COMPLETE, 0.5), (TrialState.COMPLETE, 0.75), (TrialState.PRUNED, None)]):
        study.add_trial(optuna.trial.FrozenTrial(
            number=i, state=state, value=value, datetime_start=start, datetime_complete=start + timedelta(seconds=60 * (i + 1)),
            params={"model.head": "gap-mlp"}, distributions=dist, user_attrs={}, system_attrs={},
            intermediate_values={}, trial_id=i,
        ))
    study.set_user_attr("objectives", ["val/macro_f1"])
    now = time.time()
    study.set_user_attr(LAUNCH_ATTR, {"started": now - 100, "target": 7, "timeout": None, "workers": 2, "host": "h"})
    # 4 of 7 trials left at a mean of 120 s per trial on 2 workers.
    assert eta_seconds(study, now) == pytest.approx(4 * 120 / 2)
    study.set_user_attr(LAUNCH_ATTR, {"started": now - 100, "target": 7, "timeout": 150, "workers": 2, "host": "h"})
    assert eta_seconds(study, now) == pytest.approx(50)  # the timeout comes first
    text = format_status(study)
    assert "3 trial(s): COMPLETE 2, PRUNED 1" in text and "ETA: ~0.8 min" in text
    assert "best: trial 1  val/macro_f1=0.7500  {'model.head': 'gap-mlp'}" in text
    study.set_user_attr(LAUNCH_ATTR, {"started": now - 100, "target": 7, "ended": now, "interrupted": True})
    assert eta_seconds(study, now) is None and "ETA: stopped by Ctrl-C" in format_status(study)


# --------------------------------------------------------------------------- slower, real processes


def _wait_for_running(name: str, proc: subprocess.Popen[bytes], timeout: float = 240) -> optuna.trial.FrozenTrial:
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, "the sweep process ended before a trial started"
        if Path(default_storage(name)).is_file():
            running = [t for t in load(name).get_trials(states=(TrialState.RUNNING,)) if RUN_ATTR in t.user_attrs]
            if running:
                return running[0]
        time.sleep(0.5)
    raise AssertionError("no trial started")


def _cli(config: Path, *args: str, output: bool = False) -> subprocess.Popen[bytes]:
    """`cxrlab sweep` as its own process; `output`: keep stdout+stderr (read with communicate)."""
    cmd = [sys.executable, "-m", "cxrlab.experiments.cli.main", "sweep", "--config", str(config), "--gpus", "none", *args]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.PIPE if output else subprocess.DEVNULL
    # Its own session: every process the launch starts stays in it (see _left_in_session); workers
    # lead process groups of their own inside it.
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
                            start_new_session=True)


def _left_in_session(sid: int, grace: float = 10.0) -> list[str]:
    """The live processes of session `sid` (Linux /proc; zombies excluded), after up to `grace`
    seconds: a process killed by its parent-death signal exits a moment after its parent."""
    deadline = time.monotonic() + grace
    while (left := _in_session(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _in_session(sid: int) -> list[str]:
    """The live processes of session `sid` now."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        state, _, _, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == sid and state != "Z":
            left.append(f"{pid} {stat.split(' (', 1)[1].split(')')[0]}")
    return left


def _end_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of a launch started by `_cli` (its own session): a launch that
    hangs or fails must not go on using CPU for the rest of the suite after its test has ended."""
    for entry in _in_session(proc.pid):  # the launcher leads the session: it is listed too
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(entry.split()[0]), signal.SIGKILL)
    proc.wait()


def test_killed_worker_is_requeued_within_the_launch(in_tmp_cwd: Path, folder_tree: Path) -> None:
    """SIGKILL one of two workers mid-trial: the launcher says so, fails and re-queues the trial at
    once (no heartbeat grace to wait out), and still delivers the trials it was asked for."""
    search = {"sampler": "random", "params": MLP}  # default heartbeat grace: re-queue must not wait for it
    # Loader processes (one for each of the persistent train and val loaders, two per worker while it
    # fits): they must die with the killed worker, not outlive the launch. One per loader, not two,
    # and no trust fit (its two loaders start two more): sweep workers are spawned, so each loader
    # process is spawned too and imports torch afresh, seconds of CPU apiece.
    config = sweep_yaml(in_tmp_cwd / "kill.yaml", search, **{
        "data.root": str(folder_tree), "trainer.max_epochs": 2, "data.num_workers": 1, "trust.enabled": False})
    proc = _cli(config, "--n_trials", "2", "--workers", "2", output=True)
    try:
        victim = _wait_for_running("kill", proc)
        os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        out = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode == 0, out
        assert _left_in_session(proc.pid) == []  # no worker, loader or tracker process of the launch is left
    finally:
        _end_session(proc)
    assert f"died: killed by SIGKILL; trial(s) {victim.number} failed and re-queued" in out
    trials = load("kill").trials
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert trials[victim.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    client = mlflow()
    dead = client.get_run(victim.user_attrs[RUN_ATTR])
    assert dead.info.status == "KILLED" and "killed by SIGKILL" in dead.data.tags["cxrlab.error"]
    parent = client.get_run(load("kill").user_attrs[PARENT_ATTR])
    runs = children(parent.info.run_id)
    assert len(runs) == 3 and all(r.info.status != "RUNNING" for r in runs)
    assert parent.info.status == "FINISHED" and parent.info.end_time >= max(r.info.end_time for r in runs)


@pytest.mark.slow
def test_killed_worker_is_requeued_and_ctrl_c_stops_cleanly(in_tmp_cwd: Path, folder_tree: Path) -> None:
    search = {"sampler": "random", "params": MLP, "heartbeat": {"interval": 1, "grace": 3}}
    long = {"data.root": str(folder_tree), "trainer.max_epochs": 500}
    config = sweep_yaml(in_tmp_cwd / "crash.yaml", search, **long)
    proc = _cli(config, "--n_trials", "1")
    victim = _wait_for_running("crash", proc)
    time.sleep(2)  # a heartbeat or two
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(4)
    run_sweep(config, {"trainer.max_epochs": 1}, n_trials=1, gpus="none")
    trials = load("crash").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == victim.params and trials[1].system_attrs["failed_trial"] == 0
    dead = mlflow().get_run(trials[0].user_attrs[RUN_ATTR])
    assert dead.info.status == "KILLED" and "heartbeats" in dead.data.tags["cxrlab.error"]

    proc = _cli(config, "--n_trials", "2")
    interrupted = _wait_for_running("crash", proc)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    study = load("crash")
    stopped = study.trials[interrupted.number]
    assert stopped.state == TrialState.FAIL and "interrupted" in stopped.user_attrs["error"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == stopped.params
    assert "ETA: stopped by Ctrl-C; run the sweep again to resume (1 re-queued)" in format_status(study)
    client = mlflow()
    assert client.get_run(study.user_attrs[PARENT_ATTR]).info.status == "KILLED"
    assert client.get_run(stopped.user_attrs[RUN_ATTR]).info.status == "KILLED"
    run_sweep(config, {"trainer.max_epochs": 1}, n_trials=1, gpus="none")  # resume: the re-queued trial runs
    rerun = load("crash").trials[waiting[0].number]
    assert rerun.state == TrialState.COMPLETE and rerun.params == stopped.params


def test_two_workers_on_postgresql(in_tmp_cwd: Path, folder_tree: Path, postgres: str) -> None:
    config = sweep_yaml(in_tmp_cwd / "pg.yaml", {"sampler": "random", "n_trials": 2, "params": MLP}, **{"data.root": str(folder_tree)})
    outcome = run_sweep(config, storage=postgres, workers=2, gpus="none")
    assert outcome.worker_exit_codes == [0, 0]
    study = load("pg", postgres)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
    assert len(children(outcome.parent_run_id)) == 2


def test_road_gap_and_pointing_game_are_sweep_objectives(in_tmp_cwd: Path) -> None:
    """The epoch-end pass logs explain/road_gap (explain.road) and explain/pointing_game (lesion masks),
    so a study can optimise them."""
    from cxrlab.datamodules.phantom import generate_phantom

    generate_phantom(in_tmp_cwd / "phantom", n_per_class=6, size=32, seed=0, progress=False)
    search = {"sampler": "random", "n_trials": 1, "objectives": ["explain/road_gap", "explain/pointing_game"],
              "params": {"model.head": ["gap-linear"]}}
    config = sweep_yaml(in_tmp_cwd / "sanity.yaml", search, **{
        "data.root": str(in_tmp_cwd / "phantom"), "explain.enabled": True, "explain.road": True, "explain.eigen": False})
    outcome = run_sweep(config, gpus="none")
    (trial,) = load("sanity").trials
    assert trial.state == TrialState.COMPLETE and len(trial.values) == 2
    assert -1 <= trial.values[0] <= 1 and 0 <= trial.values[1] <= 1
    (run,) = children(outcome.parent_run_id)
    assert {"explain/road_gap", "explain/pointing_game"} <= set(run.data.metrics)


def test_a_multilabel_study_optimises_macro_auroc(in_tmp_cwd: Path) -> None:
    """A sweep runs unchanged on a multi-label task: its trials train sigmoid models and report val/macro_auroc."""
    from cxrlab.datamodules.phantom import generate_phantom

    generate_phantom(in_tmp_cwd / "phantom-ml", n_per_class=10, size=32, seed=0, progress=False, multilabel=True)
    search = {"sampler": "random", "n_trials": 1, "objectives": ["val/macro_auroc"],
              "params": {"model.lr": {"low": 1e-3, "high": 3e-3, "log": True}}}
    config = sweep_yaml(in_tmp_cwd / "multilabel.yaml", search, **{
        "data.root": str(in_tmp_cwd / "phantom-ml"), "data.split": [0.6, 0.4]})
    outcome = run_sweep(config, gpus="none")
    (trial,) = load("multilabel").trials
    assert trial.state == TrialState.COMPLETE and 0 <= trial.values[0] <= 1
    (run,) = children(outcome.parent_run_id)
    assert run.data.params["data.task"] == "multilabel"
    assert {"val/macro_auroc", "val/auroc/bacteria"} <= set(run.data.metrics)
