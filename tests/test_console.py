"""What a person sees: the console of a real `cxrlab train` and `evaluate`, the links they print
opened in the MLflow UI in headless Chromium, run-id prefixes, compare's width and run durations.
One ci_tiny training is shared by the module."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from cxrlab.datamodules.phantom import generate_phantom
from cxrlab.experiments.tracking.ui import wait_until_up

CXRLAB = str(Path(sys.executable).parent / "cxrlab")
TINY = ["--config", "ci_tiny", "--data.num_workers", "0"]
# Lines that ask nothing of the user; none may reach the default console.
NOISE = [
    "interpreted in multiple ways", "litlogger", "limit_train_batches=1.0", "log_every_n_steps",
    "LeafSpec", "BuildBackendWarning", "Creating initial MLflow database tables", "GPU available",
]
PYTHON_WARNING = re.compile(r"\S+\.py:\d+: \w*Warning:")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CXRLAB_DEBUG")}
    return env | extra


def _cxrlab(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([CXRLAB, *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, folder_tree: Path) -> dict[str, Any]:
    """A ci_tiny training in a fresh folder: its folder, console output, run and checkpoint."""
    work = tmp_path_factory.mktemp("console")
    done = _cxrlab("train", *TINY, "--data.root", str(folder_tree), "--trainer.max_epochs", "2", cwd=work)
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    ckpt = next(work.glob("mlruns/checkpoints/*/*/checkpoints/best-*.ckpt"))
    return {"work": work, "out": done.stdout, "err": done.stderr, "run": run, "client": client, "ckpt": ckpt}


def test_the_training_console_tells_the_story_without_noise(trained: dict[str, Any]) -> None:
    out, err = trained["out"], trained["err"]
    printed = out + err
    assert not PYTHON_WARNING.search(printed), printed
    assert [n for n in NOISE if n in printed] == []
    lines = out.splitlines()
    assert lines[0].startswith("cxrlab train: ") and lines[1].lstrip().startswith("data ")
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epochs) == 2 and all("val/macro_f1" in ln and "alarm" in ln for ln in epochs)
    assert "== cxrlab train: done ==" in out


def test_the_shortcut_alarm_is_a_line_of_its_own(tmp_path: Path) -> None:
    data = tmp_path / "phantom-shortcut"
    generate_phantom(data, n_per_class=12, size=64, seed=0, shortcut=0.9, progress=False)
    # Bounds that any corner marker breaks, so that one epoch's heatmaps fire it for certain.
    strict = ["--explain.alarm.max_corner_focus", "0.01", "--explain.alarm.max_border_focus", "0.01", "--explain.alarm.max_share", "0"]
    done = _cxrlab("train", *TINY, "--data.root", str(data), "--data.image_size", "64", *strict, cwd=tmp_path)
    alarms = [ln for ln in done.stdout.splitlines() if "SHORTCUT ALARM" in ln]
    assert alarms and all(re.fullmatch(r"(\x1b\[[0-9;]*m)?epoch 0: SHORTCUT ALARM: .*", ln) for ln in alarms), done.stdout
    assert not PYTHON_WARNING.search(done.stdout + done.stderr)


def test_quiet_prints_the_end_block_only(trained: dict[str, Any], folder_tree: Path, tmp_path: Path) -> None:
    done = _cxrlab("train", *TINY, "--data.root", str(folder_tree), "--quiet", cwd=tmp_path)
    assert done.stdout.lstrip().startswith("== cxrlab train: done ==") and done.stderr == ""


def test_an_evaluate_run_lasts_as_long_as_the_command(trained: dict[str, Any]) -> None:
    start = time.monotonic()
    done = _cxrlab("evaluate", str(trained["ckpt"]), "--out", "ev", "--n_boot", "50", cwd=trained["work"])
    wall = time.monotonic() - start
    run_id = re.search(r"MLflow run: (\w+)", done.stdout).group(1)
    info = trained["client"].get_run(run_id).info
    assert 0.8 * wall <= (info.end_time - info.start_time) / 1000 <= 1.2 * wall
    assert "#/experiments/" in done.stdout and "workflowType=machine_learning" in done.stdout


def test_a_run_id_prefix_works_everywhere_and_an_ambiguous_one_names_the_candidates(trained: dict[str, Any]) -> None:
    work, run_id = trained["work"], trained["run"].info.run_id
    prefix = run_id[:6]
    assert "0." in _cxrlab("compare", prefix, "--metrics", "val/acc", "--out", "cmp", cwd=work).stdout
    done = _cxrlab("explain", "compare", prefix, run_id, cwd=work)
    assert "mean average-heatmap correlation (same class): 1.000" in done.stdout
    assert "MLflow run:" in _cxrlab("evaluate", f"runs:/{prefix}", "--out", "ev2", "--n_boot", "20", cwd=work).stdout
    # A second run whose id shares the first 6 characters: a fresh run, renamed in the store.
    client = trained["client"]
    twin = client.create_run(trained["run"].info.experiment_id, run_name="twin").info.run_id
    alike = run_id[:6] + ("0" if run_id[6] != "0" else "1") + twin[7:]
    with sqlite3.connect(work / "mlruns" / "mlflow.db") as db:
        for table in ("runs", "tags"):
            db.execute(f"UPDATE {table} SET run_uuid = ? WHERE run_uuid = ?", (alike, twin))
    bad = subprocess.run([CXRLAB, "compare", prefix], cwd=work, env=_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    (line,) = bad.stderr.strip().splitlines()
    assert f"{prefix}: the run id prefix is ambiguous" in line and run_id[:12] in line and alike[:12] in line


def test_compare_fits_a_100_column_terminal(trained: dict[str, Any]) -> None:
    metrics = ("val/acc,test/acc,explain/border_focus,explain/corner_focus,explain/outside_body_focus,explain/aopc_gap,"
               "test/explain/border_focus,test/explain/corner_focus")
    done = _cxrlab("compare", "--experiment", "ci-tiny", "--metrics", metrics, "--out", "cmp100", cwd=trained["work"], COLUMNS="100")
    assert max(len(line) for line in done.stdout.splitlines()) <= 100
    assert "t/ test/" in done.stdout and "—" in done.stdout and "the run did not log this metric" in done.stdout


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _dom(url: str, profile: Path) -> str:
    """The page as headless Chromium renders it once its scripts have run."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom"]
    return subprocess.run([_chromium(), *flags, url], capture_output=True, text=True, timeout=180).stdout


def test_the_printed_link_opens_the_runs_table_in_a_browser(trained: dict[str, Any], tmp_path: Path) -> None:
    if _chromium() is None:
        pytest.skip("no Chromium here (.ci/run installs Debian's chromium)")
    link = re.search(r"all runs:\s+(\S+)", trained["out"]).group(1)
    port = 5000 + os.getpid() % 1000  # not the default 5000, which a user's own UI may hold
    ui = subprocess.Popen([CXRLAB, "ui", "--port", str(port)], cwd=trained["work"], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert wait_until_up(f"http://127.0.0.1:{port}")
        page = _dom(link.replace(":5000/", f":{port}/"), tmp_path / "profile")
    finally:
        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait()
    title = re.search(r"<title>([^<]*)", page).group(1)
    assert title.startswith("Runs - Experiment"), title
    assert trained["run"].info.run_name in page
    assert "Detect Issues" not in page and "Observability" not in page  # not the GenAI traces view
