"""Chaos: SIGKILL a random process of a training or a sweep at a random moment, 20 times with fixed
seeds, then resume or re-launch as a user would. After each: no run stays RUNNING, no metric has
two values at one step, trial numbers are unique, and no process of the launch is left.

Slow (tens of minutes on 2 cores): `make test-slow`. The README's reliability section reports the
figure this prints (kills survived out of kills made).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

KILLS = 20
CXRLAB = str(Path(sys.executable).parent / "cxrlab")
CI_TINY = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "ci_tiny.yaml"
TRAIN = ["--config", "ci_tiny", "--data.num_workers", "2", "--trainer.max_epochs", "3", "--tracking.log_checkpoint", "false"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CXRLAB_DEBUG")}


def _session(sid: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of the live processes of session `sid`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            state, ppid, _, session = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:4]
        except OSError:
            continue
        if int(session) == sid and state != "Z":
            found.append((int(pid), int(ppid)))
    return found


def _victim(rng: random.Random, sid: int) -> int | None:
    """A random live process of the session: the training or the sweep launcher, a sweep worker,
    or a loader worker of either."""
    candidates = [pid for pid, _ in _session(sid)]
    return rng.choice(sorted(candidates)) if candidates else None


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CXRLAB, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)


def _check(work: Path, sid: int) -> list[str]:
    """What is wrong in `work` after recovery (empty: the kill was survived)."""
    problems = []
    deadline = time.monotonic() + 15
    while _session(sid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left := _session(sid):
        problems.append(f"processes left: {left}")
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    problems += [f"run {r.info.run_name} is RUNNING" for r in runs if r.info.status == "RUNNING"]
    for run in runs:
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            if len(steps) != len(set(steps)):
                problems.append(f"run {run.info.run_name}: {key} has a step twice")
    for journal in (work / "mlruns" / "optuna").glob("*.journal"):
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        for summary in optuna.get_all_study_summaries(storage):
            numbers = [t.number for t in optuna.load_study(study_name=summary.study_name, storage=storage).trials]
            if len(numbers) != len(set(numbers)):
                problems.append(f"study {summary.study_name}: trial numbers repeat")
    return problems


def _train_round(rng: random.Random, work: Path, data: Path) -> tuple[bool, list[str]]:
    proc = subprocess.Popen([CXRLAB, "train", *TRAIN, "--data.root", str(data)], cwd=work, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(rng.uniform(2, 25))
    victim = _victim(rng, proc.pid)
    if victim is not None:
        os.kill(victim, signal.SIGKILL)
    proc.wait(timeout=900)
    last = next(work.glob("mlruns/checkpoints/*/*/checkpoints/last.ckpt"), None)
    # A user resumes from last.ckpt when there is one, else trains again.
    again = _run("train", "--resume", str(last), "--data.root", str(data), cwd=work) if last else None
    if again is None or again.returncode != 0:
        _run("train", *TRAIN, "--data.root", str(data), cwd=work)
    return victim is not None, _check(work, proc.pid)


def _sweep_round(rng: random.Random, work: Path, data: Path) -> tuple[bool, list[str]]:
    raw = yaml.safe_load(CI_TINY.read_text())
    raw["data"] |= {"root": str(data), "num_workers": 2, "split": [0.7, 0.3]}
    raw["trainer"] |= {"max_epochs": 2, "limit_train_batches": 2}
    raw["tracking"] = {"experiment": "chaos", "log_checkpoint": False}
    raw["search"] = {"study_name": "chaos", "sampler": "random", "params": {"model.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}
    config = work / "chaos.yaml"
    config.write_text(yaml.safe_dump(raw))
    launch = ["sweep", "--config", str(config), "--gpus", "none", "--workers", "2", "--n_trials", "3"]
    proc = subprocess.Popen([CXRLAB, *launch], cwd=work, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(rng.uniform(5, 40))
    victim = _victim(rng, proc.pid)
    if victim is not None:
        os.kill(victim, signal.SIGKILL)
    proc.wait(timeout=900)
    relaunch = subprocess.Popen([CXRLAB, *launch[:-1], "1"], cwd=work, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    relaunch.wait(timeout=900)
    return victim is not None, _check(work, proc.pid) + _check(work, relaunch.pid)


@pytest.mark.slow
def test_random_kills_are_survived(tmp_path: Path, folder_tree: Path) -> None:
    made, survived, report = 0, 0, []
    for seed in range(KILLS):
        rng = random.Random(seed)
        work = tmp_path / f"round{seed:02d}"
        work.mkdir()
        killed, problems = (_sweep_round if seed % 2 else _train_round)(rng, work, folder_tree)
        made += killed
        survived += killed and not problems
        report += [f"round {seed}: {p}" for p in problems]
    print(f"\nchaos: {survived} of {made} kills survived")
    assert made >= KILLS // 2 and report == [], "\n".join(report)
