"""The sweep runner: an Optuna study over a training config, optimised by K worker processes.

The launcher creates (or resumes, by name) the study and its MLflow parent run, starts K
workers (each pinned to one GPU through CUDA_VISIBLE_DEVICES, or to the CPU with cores/K
torch threads) that all optimise the same study, and logs the study report when they stop.
Workers share one trial budget, so `--n_trials N` means N new trials in all, and trial
numbers continue where the study left off. A worker that dies is reported at once; its trial
is failed and re-queued and a replacement started (`WorkerPool`), so the launch still delivers
its trials. Several launches (nodes) may run on one study at the same time.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from cxrlab.callbacks import console
from cxrlab.config import (
    Config,
    ConfigError,
    flatten,
    from_dict,
    read_yaml,
    set_dotted,
    to_dict,
)
from cxrlab.config.secrets import redact
from cxrlab.datamodules.loader_workers import die_with
from cxrlab.experiments.sweeps import recovery, trial_runs
from cxrlab.experiments.sweeps.search_schema import SearchConfig
from cxrlab.experiments.sweeps.search_space import (
    build_pruner,
    build_sampler,
    corner_points,
    parse_search,
)
from cxrlab.experiments.sweeps.status import LAUNCH_ATTR, format_status
from cxrlab.experiments.sweeps.storage import default_storage, open_storage
from cxrlab.experiments.tracking import store
from cxrlab.experiments.tracking.ui import ui_link
from cxrlab.experiments.tracking.writer import RunWriter
from cxrlab.experiments.training.checks import check_config


@dataclass(frozen=True)
class LoadedSweep:
    """A sweep YAML: the parsed search block and the base training config (overrides applied)."""

    spec: SearchConfig
    base_raw: dict[str, Any]
    base: Config
    where: str


@dataclass(frozen=True)
class SweepPlan:
    """What a worker process needs to join the study (picklable: workers are spawned)."""

    config: str
    overrides: dict[str, Any]
    study_name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_id: str
    timeout: float | None
    seed_offset: int  # trials in the study at launch: a resumed launch draws fresh samples


@dataclass
class SweepOutcome:
    """What a launch did."""

    study_name: str
    storage: str
    parent_run_id: str | None
    new_trials: int
    interrupted: bool = False
    worker_exit_codes: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dead_workers: list[str] = field(default_factory=list)
    link: str | None = None  # the parent run in the MLflow UI's training view
    best_model_id: str | None = None  # the best trial's logged model (single-objective studies)


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> LoadedSweep:
    """Read a sweep YAML; the overrides apply to every trial and may not touch searched keys."""
    raw = read_yaml(path)
    if "search" not in raw:
        raise ConfigError(
            f"{path}: no search: block; a sweep config is a training config plus search: "
            "(see experiments/configs/phantom_sweep.yaml)"
        )
    spec = parse_search(raw.pop("search"), str(path))
    overrides = overrides or {}
    clash = sorted(spec.params.keys() & overrides.keys())
    if clash:
        raise ConfigError(f"{path}: {', '.join(clash)} searched in search.params; drop the override or the parameter")
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    where = f"{path} (with overrides)" if overrides else str(path)
    base = check_config(from_dict(copy.deepcopy(raw), where), where)
    check_search_space(spec, raw, where)
    return LoadedSweep(spec, raw, base, where)


def check_search_space(spec: SearchConfig, raw: dict[str, Any], where: str) -> None:
    """Validate the config of every combination the study can sample (ranges at both ends)."""
    flat = flatten(raw)
    for point in corner_points(spec, flat):
        trial_raw = copy.deepcopy(raw)
        for key, value in point.items():
            set_dotted(trial_raw, key, value)
        shown = ", ".join(f"{k}={v}" for k, v in point.items())
        try:
            check_config(from_dict(trial_raw, where), where)
        except ConfigError as e:
            raise ConfigError(f"{e} (in the search space, at {shown})") from None


# --------------------------------------------------------------------------- the study


def open_study(loaded: LoadedSweep, name: str, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, bool]:
    """Create the study or load it by name, checking it optimises the same objectives; True when
    this launch created it (of launches started at once on several nodes, exactly one does)."""
    spec = loaded.spec
    options = {"study_name": name, "storage": storage, "sampler": build_sampler(spec, spec.seed), "pruner": build_pruner(spec)}
    try:
        study, created = optuna.create_study(directions=list(spec.directions), **options), True
        study.set_user_attr(trial_runs.PARENT_PENDING_ATTR, True)  # launches joining now wait for its parent run
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(**options), False
    directions = [d.name.lower() for d in study.directions]
    stored = study.user_attrs.get("objectives", list(spec.objectives))
    if directions != list(spec.directions) or stored != list(spec.objectives):
        raise ValueError(
            f"study {name!r} optimises {stored} ({directions}), this config {list(spec.objectives)} "
            f"({list(spec.directions)}); pick another --study_name"
        )
    study.set_user_attr("objectives", list(spec.objectives))
    return study, created


def trial_budget(study: optuna.Study, spec: SearchConfig, n_trials: int | None) -> int | None:
    """New trials for this launch: --n_trials, else search.n_trials; a grid is capped at the
    points not yet run (plus re-queued trials, which run first)."""
    n = n_trials if n_trials is not None else spec.n_trials
    if spec.sampler.name != "grid":
        return n
    grid = spec.grid()
    trials = study.get_trials(deepcopy=False)
    done = {
        t.system_attrs["grid_id"] for t in trials
        if t.state.is_finished() and "grid_id" in t.system_attrs and t.system_attrs.get("search_space") == grid
    }
    left = spec.grid_size() - len(done) + sum(t.state == TrialState.WAITING for t in trials)
    return left if n is None else min(n, left)


def worker_seed(seed: int, offset: int, worker: int) -> int:
    """A sampler seed per (launch, worker): workers and resumed launches draw different samples."""
    return int(np.random.SeedSequence([seed, offset, worker]).generate_state(1)[0])


class TrialBudget:
    """Trials started by one launch, shared by its workers; `take` is atomic across processes.

    Each worker's claimed-but-unfinished slots are counted too (`held`), so the slots of a worker
    that dies go back to the budget whether its trial was running or not yet created.
    """

    def __init__(self, counter: Any, limit: int | None, held: Any, parent_pid: int | None = None, worker: int = 0) -> None:
        self.counter = counter
        self.limit = limit
        self.held = held  # shared int array: slots each worker index holds
        self.parent_pid = parent_pid
        self.worker = worker

    def for_worker(self, worker: int) -> TrialBudget:
        """The same budget as seen by worker number `worker`."""
        return TrialBudget(self.counter, self.limit, self.held, self.parent_pid, worker)

    def left(self) -> bool:
        """Whether trials are left to start."""
        return self.limit is None or self.counter.value < self.limit

    def release_held(self, worker: int) -> int:
        """Hand back the slots worker `worker` claimed and did not finish (it died); returns how many."""
        with self.counter.get_lock():
            n = self.held[worker]
            self.held[worker] = 0
            self.counter.value = max(0, self.counter.value - n)
        return n

    def take(self) -> bool:
        """Claim one trial; False when the launch's budget is spent."""
        with self.counter.get_lock():
            if self.limit is not None and self.counter.value >= self.limit:
                return False
            self.counter.value += 1
            self.held[self.worker] += 1
            return True

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """study.optimize callback after each finished trial: its slot is spent; claim the next
        trial or stop (also when the launcher died)."""
        with self.counter.get_lock():
            self.held[self.worker] = max(0, self.held[self.worker] - 1)
        orphaned = self.parent_pid is not None and os.getppid() != self.parent_pid
        if orphaned or not self.take():
            study.stop()


# --------------------------------------------------------------------------- workers


def run_worker(plan: SweepPlan, worker: int, budget: TrialBudget) -> int:
    """Optimise the plan's study until the budget, the timeout or the grid runs out; 130 on Ctrl-C."""
    from cxrlab.experiments.sweeps.objective import TrialContext, run_trial

    if console.level() < console.VERBOSE:
        # A trial's training prints nothing of its own (its header and epochs would interleave
        # with the other workers'); each finished trial is one line. --verbose shows it all.
        console.configure(console.QUIET)
    loaded = load_sweep(plan.config, plan.overrides)
    spec = loaded.spec
    client = MlflowClient(plan.tracking_uri)
    storage = open_storage(
        plan.storage, spec.heartbeat.interval, spec.heartbeat.grace, spec.heartbeat.max_retry,
        on_stale=trial_runs.stale_run_closer(client),
    )
    study = optuna.load_study(
        study_name=plan.study_name, storage=storage,
        sampler=build_sampler(spec, worker_seed(spec.seed, plan.seed_offset, worker)), pruner=build_pruner(spec),
    )
    ctx = TrialContext(
        spec, loaded.base_raw, flatten(to_dict(loaded.base)), loaded.where, client,
        plan.experiment_id, plan.parent_id, plan.study_name,
    )
    if not budget.take():
        return 0
    try:
        study.optimize(
            functools.partial(run_trial, ctx), timeout=plan.timeout, catch=(Exception,),
            callbacks=[trial_runs.trial_run_closer(client, spec.objectives), budget],
        )
    except KeyboardInterrupt:
        return 130
    return 0


def _worker_process(plan: SweepPlan, worker: int, budget: TrialBudget, threads: int) -> None:
    """Entry point of a spawned worker (its own process group: the launcher forwards Ctrl-C once)."""
    os.setpgrp()
    die_with(os.getppid())  # a worker outlives neither its launcher nor, through it, the user's Ctrl-C
    console.configure(console.inherited())
    import torch

    torch.set_num_threads(threads)
    sys.exit(run_worker(plan, worker, budget))


def visible_gpus() -> list[str]:
    """GPU ids this process may use ($CUDA_VISIBLE_DEVICES, else every device torch sees)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_devices(workers: int | None, gpus: str) -> list[str | None]:
    """One entry per worker: the GPU it is pinned to (round-robin over `gpus`), or None for CPU."""
    if gpus == "auto":
        ids = visible_gpus()
    elif gpus.lower() in ("", "none", "cpu"):
        ids = []
    else:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
    k = workers if workers is not None else max(1, len(ids))
    if k < 1:
        raise ValueError(f"--workers {k}: need at least one worker")
    return [ids[i % len(ids)] if ids else None for i in range(k)]


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the processes started inside the block."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class WorkerPool:
    """The worker processes of one launch. A worker that dies (killed, OOM, segfault) is
    reported, its trial failed and re-queued at once, its trial slot handed back to the budget,
    and a replacement started on the same device while trials are left to run."""

    plan: SweepPlan
    budget: TrialBudget
    study: optuna.Study  # storage with the study's re-queue callback
    client: MlflowClient
    max_respawns: int
    threads: int
    live: dict[int, tuple[Any, str | None]] = field(default_factory=dict)  # sentinel -> (process, device)
    codes: list[int] = field(default_factory=list)
    deaths: list[str] = field(default_factory=list)
    started: int = 0

    def start(self, device: str | None) -> None:
        """Start worker number `started` pinned to `device` (None: CPU)."""
        ctx = mp.get_context("spawn")
        index = self.started
        with _environ(CUDA_VISIBLE_DEVICES=device or "", OMP_NUM_THREADS=str(self.threads)):
            p = ctx.Process(
                target=_worker_process, args=(self.plan, index, self.budget.for_worker(index), self.threads),
                name=f"sweep-worker-{index}",
            )
            p.start()
        self.live[p.sentinel] = (p, device, index)
        self.started += 1

    def watch(self) -> None:
        """Wait for every worker to end, recovering from deaths as they happen."""
        while self.live:
            for sentinel in multiprocessing.connection.wait(list(self.live)):
                p, device, index = self.live.pop(sentinel)
                p.join()
                _reap_group(p.pid)
                self.codes.append(p.exitcode)
                if p.exitcode not in (0, 130):
                    self._recover(p, device, index)

    def _recover(self, p: Any, device: str | None, index: int) -> None:
        why = f"worker {p.name} (pid {p.pid}, {'GPU ' + device if device else 'CPU'}) died: {recovery.describe_exit(p.exitcode)}"
        requeued = recovery.recover_trials(self.study, self.client, p.pid, why)
        self.budget.release_held(index)  # its running trial's slot, or one taken just before it died
        what = f"trial(s) {', '.join(map(str, requeued))} failed and re-queued" if requeued else "no running trial"
        self.deaths.append(f"{why}; {what}")
        print(f"cxrlab sweep: {self.deaths[-1]}", file=sys.stderr)
        if self.budget.left() and len(self.deaths) <= self.max_respawns:
            self.start(device)
            print(f"cxrlab sweep: started a replacement worker on {'GPU ' + device if device else 'CPU'}", file=sys.stderr)

    def interrupt(self) -> None:
        """Ctrl-C: forward it once to every live worker (their trials are re-queued) and wait."""
        print("cxrlab sweep: stopping workers (their trials are re-queued) ...", file=sys.stderr)
        for p, _, _ in self.live.values():
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p, _, _ in self.live.values():
            p.join()
            _reap_group(p.pid)
            self.codes.append(p.exitcode)
        self.live.clear()


def _reap_group(pgid: int) -> None:
    """Kill what is left of an ended worker's process group (it is the group's leader): loader
    workers or trackers that outlived it must not outlive the launch."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _spawn_workers(
    plan: SweepPlan, devices: list[str | None], limit: int | None, study: optuna.Study, client: MlflowClient, max_retry: int | None
) -> tuple[list[int], bool, list[str]]:
    """Run one process per device; returns their exit codes, whether Ctrl-C stopped them and the
    worker deaths recovered from."""
    ctx = mp.get_context("spawn")
    threads = max(1, len(os.sched_getaffinity(0)) // len(devices))
    # Replacements are bounded like re-queues, so a worker that dies on every start cannot loop.
    respawns = len(devices) * (3 if max_retry is None else max_retry)
    budget = TrialBudget(ctx.Value("i", 0), limit, ctx.Array("i", len(devices) + respawns + 1), parent_pid=os.getpid())
    pool = WorkerPool(plan, budget, study, client, respawns, threads)
    for device in devices:
        pool.start(device)
    interrupted = False
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # docker stop = Ctrl-C
    try:
        pool.watch()
    except KeyboardInterrupt:
        interrupted = True
        pool.interrupt()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return pool.codes, interrupted or 130 in pool.codes, pool.deaths


# --------------------------------------------------------------------------- launch


def _parent_params(loaded: LoadedSweep, name: str, storage: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The parent run's params: the sweep settings, the search space and the shared base config."""
    spec = loaded.spec
    searched = set(spec.params)
    params: dict[str, Any] = {
        "sweep.study_name": name,
        "sweep.storage": redact(storage),
        "sweep.config": loaded.where,
        "sweep.objectives": ",".join(spec.objectives),
        "sweep.directions": ",".join(spec.directions),
        "sweep.sampler": spec.sampler.name,
        "sweep.sampler_options": json.dumps(spec.sampler.options, default=str),
        "sweep.pruner": spec.pruner.name if spec.pruned else "none",
        "sweep.pruner_options": json.dumps(spec.pruner.options, default=str),
        "sweep.seed": spec.seed,
        "sweep.overrides": json.dumps(overrides, default=str),
    }
    for p in spec.params.values():
        shape = list(p.values) if p.kind == "categorical" else f"{p.kind}[{p.low}, {p.high}]" + (" log" if p.log else "")
        params[f"search.{p.name}"] = f"{shape}" + (f" when {dict(p.when)}" if p.when else "")
    base = {k: v for k, v in flatten(to_dict(loaded.base)).items() if k not in searched}
    return params | base


def absolute_uri(uri: str) -> str:
    """A relative sqlite:/// URI made absolute: MLflow caches stores by URI string, so a
    relative one would keep pointing at the first working directory it was used in."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def run_sweep(
    config: str | Path,
    overrides: dict[str, Any] | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    workers: int | None = None,
    gpus: str = "auto",
) -> SweepOutcome:
    """Create or resume the study, run the workers, log the study report on the parent run."""
    console.hush_libraries()  # Optuna and MLflow set their log levels when they load
    overrides = dict(overrides or {})
    loaded = load_sweep(config, overrides)
    spec = loaded.spec
    name = study_name or spec.study_name or Path(config).stem
    storage = storage or default_storage(name)
    devices = worker_devices(workers, gpus)
    _check_bounds(loaded, storage, len(devices), n_trials, timeout)
    study, created = open_study(loaded, name, open_storage(storage, spec.heartbeat.interval, spec.heartbeat.grace, spec.heartbeat.max_retry))
    uri = absolute_uri(store.resolve_uri(loaded.base.tracking.uri))
    if requeued := recovery.recover_dead_workers(study, MlflowClient(uri)):
        print(f"cxrlab sweep: trial(s) {', '.join(map(str, requeued))} of dead workers failed and re-queued")
    limit = trial_budget(study, spec, n_trials)
    outcome = SweepOutcome(name, storage, None, 0)
    if limit == 0:
        outcome.notes.append(f"study {name!r}: every grid point has run; nothing to do")
        print(outcome.notes[-1])
        return outcome
    if uri != loaded.base.tracking.uri:
        # Every trial (and every worker, whatever its cwd) records into the launcher's store.
        overrides["tracking.uri"] = uri
    client = MlflowClient(uri)
    experiment_id = store.ensure_experiment(client, loaded.base.tracking.experiment, uri)
    parent = _open_parent(client, study, created, experiment_id, uri, config, loaded, name, storage, overrides, outcome)
    outcome.link = ui_link(uri, experiment_id, parent)
    before = len(study.trials)
    launch = {
        "started": time.time(), "target": None if limit is None else before + limit,
        "timeout": timeout, "workers": len(devices), "host": socket.gethostname(),
    }
    study.set_user_attr(LAUNCH_ATTR, launch)
    plan = SweepPlan(str(config), overrides, name, storage, uri, experiment_id, parent, timeout, before)
    where = ", ".join(f"GPU {d}" if d is not None else "CPU" for d in devices)
    print(f"cxrlab sweep: study {name!r} ({redact(storage)}), {limit if limit is not None else 'unbounded'} new "
          f"trial(s) from #{before}, {len(devices)} worker(s): {where}; MLflow parent run {parent}")
    try:
        _run_workers(plan, devices, limit, study, client, spec.heartbeat.max_retry, outcome)
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
        study.set_user_attr(LAUNCH_ATTR, launch | {"ended": time.time(), "interrupted": outcome.interrupted})
        outcome.new_trials = len(study.trials) - before
        _close_parent(client, parent, study, spec.objectives, outcome)
    print(format_status(study))
    if outcome.best_model_id:  # what `cxrlab register` and `mlflow models serve` take
        print(f"  best model: models:/{outcome.best_model_id}")
    return outcome


def _check_bounds(loaded: LoadedSweep, storage: str, workers: int, n_trials: int | None, timeout: float | None) -> None:
    """Refuse a launch that SQLite cannot serve or that nothing would stop."""
    if storage.startswith("sqlite:") and workers > 1:
        raise ValueError(
            f"--storage {storage}: SQLite is for one worker; use the default journal file or postgresql:// "
            f"for --workers {workers}"
        )
    if timeout is None and n_trials is None and loaded.spec.n_trials is None and loaded.spec.sampler.name != "grid":
        raise ValueError(f"{loaded.where}: set search.n_trials, --n_trials or --timeout to bound the sweep")


def _open_parent(
    client: MlflowClient, study: optuna.Study, created: bool, experiment_id: str, uri: str, config: str | Path,
    loaded: LoadedSweep, name: str, storage: str, overrides: dict[str, Any], outcome: SweepOutcome,
) -> str:
    """Open (or re-open) the study's parent run and record the launch's params and config on it."""
    tags = {"cxrlab.kind": "sweep", "optuna.study_name": name, "optuna.storage": redact(storage)}
    parent = trial_runs.open_parent_run(client, study, experiment_id, uri, f"sweep-{name}", tags, created)
    outcome.parent_run_id = parent
    parent_run = RunWriter(client, parent)
    parent_run.log_params(_parent_params(loaded, name, storage, overrides))
    search_yaml = yaml.safe_dump(loaded.base_raw | {"search": read_yaml(config)["search"]}, sort_keys=False)
    parent_run.log_object(search_yaml.encode(), "sweep_config.yaml")
    if not loaded.spec.pruned:
        why = "multi-objective studies cannot be pruned" if loaded.spec.multi_objective else "pruner: none"
        outcome.notes.append(f"pruning is off: {why}")
        parent_run.set_tags({"sweep.pruning": outcome.notes[-1]})
        print(f"cxrlab sweep: {outcome.notes[-1]}")
    return parent


def _run_workers(
    plan: SweepPlan, devices: list[str | None], limit: int | None, study: optuna.Study, client: MlflowClient,
    max_retry: int | None, outcome: SweepOutcome,
) -> None:
    """One CPU worker in this process, else one spawned process per device; exit codes into `outcome`."""
    if len(devices) == 1 and devices[0] is None:
        with _environ(CUDA_VISIBLE_DEVICES=""):  # a CPU worker, even where GPUs exist
            ctx = mp.get_context("spawn")
            code = run_worker(plan, 0, TrialBudget(ctx.Value("i", 0), limit, ctx.Array("i", 1)))
        outcome.worker_exit_codes, outcome.interrupted = [code], code == 130
    else:
        outcome.worker_exit_codes, outcome.interrupted, outcome.dead_workers = _spawn_workers(
            plan, devices, limit, study, client, max_retry
        )


def _close_parent(
    client: MlflowClient, parent: str, study: optuna.Study, objectives: tuple[str, ...], outcome: SweepOutcome
) -> None:
    """Report the study on its parent run and close it, unless another launch still runs trials."""
    outcome.notes += trial_runs.report_study(client, parent, study, objectives)
    outcome.best_model_id = trial_runs.tag_best_model(client, parent, study)
    outcome.notes += [f"worker died: {d}" for d in outcome.dead_workers]
    elsewhere = trial_runs.close_parent_run(client, parent, study, "KILLED" if outcome.interrupted else "FINISHED")
    if elsewhere:
        outcome.notes.append(
            f"parent run {parent} stays RUNNING: trial(s) {', '.join(map(str, elsewhere))} still run in "
            "another launch, which closes it when it ends"
        )
        print(f"cxrlab sweep: {outcome.notes[-1]}")
