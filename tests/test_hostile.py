"""The second hostile round: each failure it found, as a test. A YAML bomb, a refused resume, stop
signals, a config typo before the heavy imports, and metric steps across resumes."""

from __future__ import annotations

import http.server
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import write_tree
from mlflow import MlflowClient

from cxrlab.callbacks.explanations.aopc import aopc
from cxrlab.config import ConfigError
from cxrlab.config.secrets import has_password, redact
from cxrlab.datamodules.sources.csv_folder import csv_source, folder_source
from cxrlab.experiments.cli.main import main
from cxrlab.experiments.evaluation.compare import compare_runs
from cxrlab.experiments.sweeps import trial_runs
from cxrlab.experiments.sweeps.recovery import recover_dead_workers
from cxrlab.experiments.sweeps.runner import TrialBudget
from cxrlab.experiments.sweeps.storage import open_storage
from cxrlab.experiments.tracking.store import all_runs, ensure_experiment, resolve_uri
from cxrlab.lightning_modules.checkpoint import read_checkpoint

CXRLAB = str(Path(sys.executable).parent / "cxrlab")
TINY = ["--config", "ci_tiny", "--data.num_workers", "0", "--tracking.log_checkpoint", "false", "--explain.enabled", "false"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CXRLAB_DEBUG")}


def _only_run(client: MlflowClient):  # noqa: ANN202
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _bomb(path: Path, levels: int = 8) -> Path:
    """A billion laughs under data.label_map: nine aliases of the level below, `levels` deep."""
    lines = ["data:", "  label_map:", '    a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _train_in_a_fresh_process(config: Path, report: str) -> subprocess.CompletedProcess[str]:
    """`cxrlab train --config CONFIG` in a new Python process, which then prints its exit code and
    `report` (a Python expression evaluated there)."""
    probe = (
        "import re, sys\n"
        "from cxrlab.experiments.cli.main import main\n"
        f"code = main(['train', '--config', {str(config)!r}])\n"
        f"print(code, {report})\n"
    )
    return subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=120)


def test_a_yaml_alias_bomb_is_refused_small_and_fast(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.yaml")
    # The peak resident size of this process's own memory (VmHWM): getrusage's ru_maxrss would
    # also count the pytest process it was forked from.
    done = _train_in_a_fresh_process(bomb, "re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)")
    code, peak_kb = done.stdout.split()
    assert code == "2"
    assert int(peak_kb) < 200 * 1024
    (line,) = done.stderr.strip().splitlines()
    assert len(line) < 300 and "bomb.yaml: its aliases (&/*) expand to" in line


def test_error_messages_cut_the_values_they_echo(tmp_path: Path, in_tmp_cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "long.yaml"
    config.write_text("data:\n  split: " + "x" * 100_000 + "\n")
    assert main(["train", "--config", str(config)]) == 2
    line = _error_line(capsys)
    assert "data.split" in line and len(line) < 400
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (2 << 20) + "\n")
    assert main(["train", "--config", str(huge)]) == 2
    assert "is too large for a config (at most 1,048,576)" in _error_line(capsys)


def test_a_config_typo_fails_before_the_heavy_imports(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  backbon: resnet18\n  head: gap-mlp\n")
    done = _train_in_a_fresh_process(config, "*[m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules]")
    assert done.stdout.split() == ["2"]  # exit 2, and none of torch, lightning, mlflow loaded
    assert "unknown key 'model.backbon' (did you mean 'backbone'?)" in done.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, folder_tree: Path, isolate) -> tuple[Path, Path]:  # noqa: ANN001
    """A FINISHED one-epoch ci_tiny run: (its folder, its last.ckpt)."""
    work = tmp_path_factory.mktemp("finished")
    with isolate(work):
        assert main(["train", *TINY, "--data.root", str(folder_tree)]) == 0
        last = next(work.glob("mlruns/checkpoints/*/*/checkpoints/last.ckpt"))
    return work, last


def test_a_refused_resume_leaves_the_run_as_it_was(finished: tuple[Path, Path], isolate, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    work, last = finished
    with isolate(work):
        assert main(["train", "--resume", str(last), "--model.backbone", "mobilenet_v3_large"]) == 2
        line = _error_line(capsys)
        assert "--resume cannot change model.backbone (trained with 'resnet18', got 'mobilenet_v3_large')" in line
        assert _only_run(MlflowClient(resolve_uri())).info.status == "FINISHED"


def test_two_resumes_log_one_value_per_step(finished: tuple[Path, Path], isolate, folder_tree: Path) -> None:  # noqa: ANN001
    work, last = finished
    with isolate(work):
        for epochs in (2, 3):
            assert main(["train", "--resume", str(last), "--trainer.max_epochs", str(epochs), "--data.root", str(folder_tree)]) == 0
        client = MlflowClient(resolve_uri())
        run = _only_run(client)
        assert run.info.status == "FINISHED"
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"{key}: steps {sorted(steps)}"
        assert len(client.get_metric_history(run.info.run_id, "data/skipped_images")) == 1
        assert len(client.get_metric_history(run.info.run_id, "val/macro_f1")) == 3


def _wait_for(path_glob: str, work: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended before the signal: {proc.stderr.read() if proc.stderr else ''}"
        found = list(work.glob(path_glob))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"{path_glob} did not appear")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_ends_killed_with_its_exit_code_and_resumes(
    sig: signal.Signals, code: int, in_tmp_cwd: Path, folder_tree: Path
) -> None:
    proc = subprocess.Popen(
        [CXRLAB, "train", *TINY, "--data.root", str(folder_tree), "--trainer.max_epochs", "200"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        last = _wait_for("mlruns/checkpoints/*/*/checkpoints/last.ckpt", in_tmp_cwd, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code
    assert err.strip().splitlines()[-1] == f"cxrlab: training stopped by {sig.name}; resume with: cxrlab train --resume {last}"
    client = MlflowClient(resolve_uri())
    run = _only_run(client)
    assert run.info.status == "KILLED"
    epochs = read_checkpoint(last)["epoch"] + 2  # one more epoch than the checkpoint holds
    assert main(["train", "--resume", str(last), "--trainer.max_epochs", str(epochs), "--data.root", str(folder_tree)]) == 0
    assert _only_run(client).info.status == "FINISHED"


def test_a_loader_worker_dies_with_its_parent(tmp_path: Path) -> None:
    """The loader workers' start (die_with) makes the kernel kill them the moment their parent
    dies, also when they are busy (PyTorch's own parent watchdog only runs between batches)."""
    child_pid = tmp_path / "child.pid"
    parent = (
        "import multiprocessing as mp, os, sys, time\n"
        "from cxrlab.datamodules.loader_workers import die_with\n"
        "def busy(parent, out):\n"
        "    die_with(parent)\n"
        "    open(out, 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        f"    mp.get_context('spawn').Process(target=busy, args=(os.getpid(), {str(child_pid)!r})).start()\n"
        "    time.sleep(120)\n"
    )
    (tmp_path / "parent.py").write_text(parent)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], env=_env())
    deadline = time.monotonic() + 120
    while not (child_pid.is_file() and child_pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(child_pid.read_text())
    proc.kill()
    proc.wait()
    time.sleep(1)
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_aopc_refuses_non_finite_maps_and_regions_larger_than_the_image() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 3))
    images, labels = torch.rand(4, 1, 16, 16), torch.zeros(4, dtype=torch.long)
    maps = torch.rand(4, 4, 4)
    maps[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^heatmaps: 1 of 4 maps hold NaN or infinite values"):
        aopc(model, images, labels, maps, region=4, steps=2)
    with pytest.raises(ValueError, match=r"explain.aopc.region=20 is larger than the 16 px input"):
        aopc(model, images, labels, torch.rand(4, 4, 4), region=20, steps=1)


def test_noise_aopc_of_an_image_is_the_same_in_any_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images, maps = torch.rand(6, 1, 16, 16, generator=gen), torch.rand(6, 4, 4, generator=gen)
    with torch.no_grad():
        labels = model(images).argmax(1)  # every image counts
    alone = aopc(model, images[:2], labels[:2], maps[:2], region=4, steps=3, sigma=0.5).per_image
    order = torch.tensor([5, 1, 3, 0, 2, 4])  # the same two images among others, elsewhere
    mixed = aopc(model, images[order], labels[order], maps[order], region=4, steps=3, sigma=0.5).per_image
    np.testing.assert_allclose(mixed[[3, 1]], alone, rtol=1e-4)  # float32 forwards of other batch sizes


def _many_runs(n: int) -> tuple[MlflowClient, str]:
    """`n` finished train runs in experiment 'many' of the store in the working directory."""
    uri = resolve_uri()
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "many", uri)
    for i in range(n):
        run = client.create_run(experiment, run_name=f"r{i:05d}", tags={"cxrlab.kind": "train"})
        client.log_metric(run.info.run_id, "val/acc", i / n)
        client.set_terminated(run.info.run_id)
    return client, experiment


def test_run_searches_page_through_every_run(in_tmp_cwd: Path) -> None:
    client, experiment = _many_runs(20)
    assert len(all_runs(client, [experiment], page_size=7)) == 20  # three pages, nothing dropped


@pytest.mark.slow
def test_compare_lists_more_than_5000_runs(in_tmp_cwd: Path) -> None:
    _many_runs(6000)
    table = compare_runs(experiment="many", metrics="val/acc", out="cmp")["table"]
    assert len(table) == 6000 and table["run_name"].nunique() == 6000


URLS = [  # (URL, has a password, redacted)
    ("postgresql://cxrlab:hunter2@db/optuna", True, "postgresql://cxrlab:***@db/optuna"),
    ("postgresql://cxrlab@db/optuna?password=s3cret", True, "postgresql://cxrlab@db/optuna?password=***"),
    ("postgresql://:s3cret@db/optuna", True, "postgresql://:***@db/optuna"),
    ("postgresql://u:p@ss@db:5432/optuna", True, "postgresql://u:***@db:5432/optuna"),
    ("postgresql://u@db/x?sslmode=require&sslpassword=k", True, "postgresql://u@db/x?sslmode=require&sslpassword=***"),
    ("http://alice:pw@mlflow.internal:5000", True, "http://alice:***@mlflow.internal:5000"),
    ("postgresql+psycopg2://cxrlab@db.internal:5432/optuna", False, "postgresql+psycopg2://cxrlab@db.internal:5432/optuna"),
    ("sqlite:///mlruns/optuna.db", False, "sqlite:///mlruns/optuna.db"),
    ("mlruns/optuna/study.journal", False, "mlruns/optuna/study.journal"),
]


@pytest.mark.parametrize(("url", "secret", "shown_as"), URLS)
def test_passwords_are_found_and_hidden_in_every_form(url: str, secret: bool, shown_as: str) -> None:
    assert has_password(url) is secret
    assert redact(url) == shown_as


@pytest.mark.parametrize("url", [u for u, secret, _ in URLS if secret])
def test_sweep_and_the_slurm_script_refuse_a_password(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--config", "phantom_sweep", "--storage", url]) == 2
    line = _error_line(capsys)
    assert line.startswith("cxrlab: error: --storage: ") and "~/.pgpass or PGPASSWORD" in line and "s3cret" not in line
    script = Path(__file__).resolve().parents[1] / "docker" / "slurm_sweep.sh"
    env = _env() | {"CXRLAB_STORAGE": url, "MLFLOW_TRACKING_URI": "http://127.0.0.1:1", "DATA": str(tmp_path)}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "holds a password; put it in ~/.pgpass or PGPASSWORD" in done.stderr


def test_the_sweep_help_shows_no_password_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "USER:PASS" not in out and not any(has_password(word) for word in out.split())


def test_an_unreachable_postgresql_study_is_one_line(in_tmp_cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://cxrlab@127.0.0.1:{_free_port()}/optuna"
    assert main(["sweep", "--config", "phantom_sweep", "--storage", url, "--n_trials", "1"]) == 2
    line = _error_line(capsys)
    assert f"{url}: cannot open the study storage" in line and "Connection refused" in line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """A tracking server that answers 503 to everything."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_error(503, "Service Unavailable")

    def log_message(self, *args: object) -> None:
        pass


def test_an_unreachable_or_failing_mlflow_server_is_one_line(
    in_tmp_cwd: Path, folder_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{_free_port()}"
    assert main(["train", *TINY, "--data.root", str(folder_tree), "--tracking_uri", down]) == 2
    line = _error_line(capsys)
    assert f"{down}: the MLflow server does not answer" in line and "refused" in line
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        failing = f"http://127.0.0.1:{server.server_port}"
        assert main(["train", *TINY, "--data.root", str(folder_tree), "--tracking_uri", failing]) == 2
        assert f"{failing}: the MLflow server does not answer (HTTP 503" in _error_line(capsys)
    finally:
        server.shutdown()


@pytest.mark.parametrize("existing", [False, True], ids=["new store", "existing store"])
def test_a_read_only_store_is_one_line(existing: bool, tmp_path: Path, folder_tree: Path) -> None:
    """A read-only file system (a bind mount in a user namespace, so this works without root)."""
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    if existing:
        resolve_uri(uri)  # created while still writable
    cmd = f"mount --bind -o ro {store} {store} && exec {CXRLAB} train {' '.join(TINY)} --data.root {folder_tree} --tracking_uri {uri}"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], env=_env(), capture_output=True, text=True, timeout=300)
    if "mount" in done.stderr and "cxrlab" not in done.stderr:
        pytest.skip(f"no user namespaces here to mount a read-only folder: {done.stderr.strip()}")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"cxrlab: error: {uri}: the MLflow store cannot be written") and "Read-only file system" in line


def test_an_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    (root / "emptyclass").mkdir()
    with pytest.warns(UserWarning, match=r"emptyclass: class folder 'emptyclass' holds no images, so that class is left out"):
        table = folder_source(root)
    assert "emptyclass" not in set(table["label"])
    with pytest.raises(ValueError, match=r"class folder 'emptyclass' holds no images.*data.strict is on"):
        folder_source(root, strict=True)


def test_a_worker_that_dies_holding_a_slot_gives_it_back() -> None:
    """Killed between claiming a trial slot and creating its trial, a worker leaves no RUNNING trial
    to re-queue; the slot it held still returns to the launch's budget."""
    ctx = multiprocessing.get_context("spawn")
    budget = TrialBudget(ctx.Value("i", 0), 2, ctx.Array("i", 3))
    first, second = budget.for_worker(0), budget.for_worker(1)
    assert first.take() and second.take() and not budget.left()
    assert budget.release_held(1) == 1 and budget.left()  # worker 1 died holding its slot
    study = optuna.create_study()
    first(study, study.ask() and study.trials[0])  # worker 0 finished its trial and claims the last slot
    assert list(budget.held) == [1, 0, 0] and budget.counter.value == 2 and not budget.left()


def test_a_run_whose_process_died_is_closed_by_the_next_training(in_tmp_cwd: Path, folder_tree: Path) -> None:
    proc = subprocess.Popen([CXRLAB, "train", *TINY, "--data.root", str(folder_tree), "--trainer.max_epochs", "200"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for("mlruns/checkpoints/*/*/checkpoints/last.ckpt", in_tmp_cwd, proc)
    finally:
        proc.kill()  # SIGKILL: nothing of cxrlab runs to close the run
        proc.wait()
    client = MlflowClient(resolve_uri())
    (dead,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert dead.info.status == "RUNNING" and dead.data.tags["cxrlab.pid"] == str(proc.pid)
    assert main(["train", *TINY, "--data.root", str(folder_tree)]) == 0
    closed = client.get_run(dead.info.run_id)
    assert closed.info.status == "KILLED" and f"pid {proc.pid}" in closed.data.tags["cxrlab.error"]


def test_a_store_being_created_when_its_process_dies_is_not_left_half_built(tmp_path: Path) -> None:
    """SIGKILL while MLflow creates a new store's tables: the store is built under a temp name and
    renamed into place, so the next command finds no store (and builds one), never half of one."""
    store = tmp_path / "store"
    probe = f"from cxrlab.experiments.tracking.store import resolve_uri; resolve_uri('sqlite:///{store}/mlflow.db')"
    proc = subprocess.Popen([sys.executable, "-c", probe], env=_env())
    deadline = time.monotonic() + 60
    while not list(store.glob(".mlflow.db.*.building")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()  # mid-build, or just after: either way no half-built mlflow.db may remain
    proc.wait()
    assert not (store / "mlflow.db").exists() or _opens(store)
    resolve_uri(f"sqlite:///{store}/mlflow.db")
    assert _opens(store) and not list(store.glob(".mlflow.db.*.building"))


def _opens(store: Path) -> bool:
    return MlflowClient(f"sqlite:///{store}/mlflow.db").search_experiments() is not None


def test_a_metadata_table_larger_than_its_cap_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "data.csv"
    table.write_text("path,label\n" + "a.png,normal\n" * 2000)
    monkeypatch.setattr("cxrlab.datamodules.sources.csv_folder.MAX_TABLE_BYTES", 1000)  # a smaller cap, not a bigger file
    with pytest.raises(ConfigError, match=r"data.csv: 26,011 bytes is too large for a metadata table \(at most 1,000\)"):
        csv_source(table)


def test_a_launch_requeues_the_trials_of_workers_that_died_with_their_launcher(in_tmp_cwd: Path) -> None:
    """A SIGKILLed launcher takes its workers with it (their parent-death signal); the next launch
    fails and re-queues their RUNNING trials at once instead of after the heartbeat grace."""
    storage = open_storage(str(in_tmp_cwd / "s.journal"), 10, 30, 3)
    study = optuna.create_study(study_name="s", storage=storage)
    gone = subprocess.Popen(["true"])
    gone.wait()
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(trial_runs.WORKER_ATTR, trial_runs.worker_label(gone.pid))
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive.set_user_attr(trial_runs.WORKER_ATTR, trial_runs.worker_label(os.getpid()))
    assert recover_dead_workers(study, MlflowClient(resolve_uri())) == [trial.number]
    states = {t.number: t.state.name for t in study.trials}
    assert states[trial.number] == "FAIL" and states[alive.number] == "RUNNING" and "WAITING" in states.values()
