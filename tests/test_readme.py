"""Every ```bash block of README.md runs, in order, as a user would type it, in one fresh folder.

Only sizes and epochs are scaled down (SCALE below). Lines that cannot run here are listed in
SKIP with the reason, and every SKIP entry must still match a README line, so the list cannot
go stale. Placeholders a user fills in (CKPT, RUN_ID, ...) are filled from the runs made by the
blocks before them.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# substring of a README line -> why that line is not run here.
SKIP: dict[str, str] = {
    "make test": "the test-suite itself (CI runs it through .ci/run)",
    "make test-slow": "the slow suite: tens of minutes on 2 cores",
    "make lint": "ruff is run by the developers; not a user path",
    "make install": "the suite already runs inside the installed .venv",
    "source .venv/bin/activate": "PATH already starts with the .venv's bin/ here",
    "--config FILE [--SECTION.KEY VALUE ...]": "a syntax template, not a command",
    "cxrlab data phantom OUT --n_per_class N": "a syntax template, not a command",
    "cxrlab evaluate CKPT [--split": "a syntax template, not a command",
    "cxrlab predict CKPT img1.png": "a syntax template, not a command",
    "cxrlab compare [--experiment NAME]": "a syntax template, not a command",
    "--data.root /data/": "needs a real dataset a user downloads (tests/test_study_configs.py runs every study config on a fixture tree with the dataset's layout)",
    "cxrlab models import /data/": "needs torchxrayvision's weights file, which a user downloads (tests/test_xrv_weights.py imports a file with its key names and shapes)",
    "--gpus 0,1,2,3": "needs four GPUs and a PostgreSQL host",
    "docker/torchrun_train.sh 4": "needs four GPUs (tests/test_cluster_scripts.py runs it with 2 CPU processes)",
    "export CXRLAB_STORAGE=": "names a PostgreSQL host and an MLflow server of a cluster",
    "sbatch --array": "needs a SLURM cluster (tests/test_cluster_scripts.py runs the script as a plain bash task)",
    "gpu_suite.sh --smoke": "tests/test_gpu_suite.py runs it (a minute of benchmarks; the GPU run needs CUDA)",
    "curl -s http://127.0.0.1:5001/invocations": "needs the server of the line above still up; tests/test_registry_serving.py posts the same base64 PNG request to `mlflow models serve`",
}
# Long-running servers: started in the background, checked over HTTP, then stopped.
SERVE: dict[str, str] = {
    "cxrlab ui": "http://127.0.0.1:5000/health",
    "MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db mlflow models serve": "http://127.0.0.1:5001/ping",
}
# (pattern, replacement) applied to every runnable line: sizes and epochs only.
SCALE: list[tuple[str, str]] = [
    (r"--n_per_class \d+", "--n_per_class 16"),
    (r"(cxrlab data phantom \S+.*?)--size \d+", r"\1--size 64"),
    (r"--n_trials \d+", "--n_trials 2"),
]
TRAIN_SCALE = "--trainer.max_epochs 1 --data.image_size 64 --explain.probe_per_class 2"


def readme_lines() -> list[list[str]]:
    """The command lines of each bash block (comments and blank lines dropped)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    out = []
    for block in blocks:
        lines = [re.sub(r"\s+#.*$", "", ln).strip() for ln in block.splitlines()]
        out.append([ln for ln in lines if ln and not ln.startswith("#")])
    return out


def skip_reason(line: str) -> str | None:
    return next((why for key, why in SKIP.items() if key in line), None)


def scaled(line: str) -> str:
    """The line with sizes and epochs scaled down."""
    for pattern, repl in SCALE:
        line = re.sub(pattern, repl, line)
    if re.match(r"cxrlab (train|sweep)\b", line) and "--resume" not in line and " status" not in line:
        line += " " + TRAIN_SCALE
    if line.startswith("make demo"):
        # -o: the .venv is the suite's own; never reinstall it from here.
        line += f" -o .venv/.installed-stamp DEMO_N=16 DEMO_SIZE=64 DEMO_ARGS='{TRAIN_SCALE}'"
    return line


def fill_placeholders(line: str, work: Path) -> str:
    """CKPT / RUN_ID / RUN_A / RUN_B from the runs the earlier blocks made."""
    if not re.search(r"\b(CKPT|RUN_ID|RUN_A|RUN_B)\b", line):
        return line
    from mlflow import MlflowClient

    ckpts = sorted(work.glob("mlruns/checkpoints/*/*/checkpoints/best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert ckpts, f"{line!r} needs a checkpoint, but no earlier block trained one"
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    found = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`cxrlab.kind` = 'train'",
        order_by=["attributes.start_time DESC"],
    )
    runs = [r.info.run_id for r in found]
    # RUN_A and RUN_B are two runs a user would compare: the newest two of one experiment (a
    # multi-label run's findings are not a four-class run's classes).
    pairs = [[r.info.run_id for r in found if r.info.experiment_id == e] for e in dict.fromkeys(
        r.info.experiment_id for r in found)]
    pair = next((p for p in pairs if len(p) > 1), runs[:1] * 2)
    values = {"CKPT": str(ckpts[-1]), "RUN_ID": runs[0], "RUN_A": pair[1], "RUN_B": pair[0]}
    return re.sub(r"\b(CKPT|RUN_ID|RUN_A|RUN_B)\b", lambda m: values[m.group(1)], line)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's fresh folder: the project's Makefile and configs are reached as from a clone."""
    path = tmp_path_factory.mktemp("readme")
    (path / "Makefile").symlink_to(ROOT / "Makefile")
    (path / ".venv").symlink_to(BIN.parent)
    (path / "pyproject.toml").symlink_to(ROOT / "pyproject.toml")
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _serve(line: str, url: str, work: Path) -> None:
    # Through env(1): a line may set variables before its command, as a shell would.
    proc = subprocess.Popen(["env", *shlex.split(line)], cwd=work, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"{line!r} exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    assert r.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{line!r}: {url} did not answer in 90 s"
                time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def assert_nothing_failed(work: Path, command: str) -> None:
    """What the user would look for next: no MLflow run and no Optuna trial ended FAIL."""
    db = work / "mlruns" / "mlflow.db"
    if db.is_file():
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{db}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        bad = [(r.info.run_name, r.info.status) for r in runs if r.info.status in ("FAILED", "KILLED")]
        assert not bad, f"after {command}: runs {bad}"
    import optuna

    from cxrlab.experiments.sweeps.storage import open_storage

    for journal in (work / "mlruns" / "optuna").glob("*.journal"):
        for study in optuna.get_all_study_summaries(open_storage(str(journal))):
            trials = optuna.load_study(study_name=study.study_name, storage=open_storage(str(journal))).trials
            failed = [t.number for t in trials if t.state == optuna.trial.TrialState.FAIL]
            assert not failed, f"after {command}: study {study.study_name} has FAIL trials {failed}"


BLOCKS = readme_lines()
# The ```python blocks (the Python API), run after the bash blocks, each as one script.
PY_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_every_skip_entry_matches_a_readme_line() -> None:
    lines = [ln for block in BLOCKS for ln in block]
    stale = [key for key in SKIP if not any(key in ln for ln in lines)]
    assert not stale, f"SKIP entries match no README line any more: {stale}"


def demo_compared(work: Path) -> None:
    """make demo ends with its compare table: both runs, their evaluations, and every run's alarm."""
    table = pd.read_csv(work / "mlruns" / "demo-report" / "compare" / "compare.csv").set_index("run_name")
    assert {"clean", "shortcut", "evaluate-clean-test", "evaluate-shortcut-test"} <= set(table.index)
    assert set(table["alarm"]) <= {"yes", "no"}  # every run was explained
    assert {"val/acc", "explain/border_focus", "explain/lung_focus"} <= set(table.columns)


# What a line leaves behind that a user reads, checked after it runs.
AFTER = {"make demo": demo_compared}


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(index: int, work: Path) -> None:
    ran = 0
    for line in BLOCKS[index]:
        if skip_reason(line):
            continue
        command = fill_placeholders(scaled(line), work)
        serve = next((url for key, url in SERVE.items() if line.startswith(key)), None)
        if serve:
            _serve(command, serve, work)
        else:
            done = subprocess.run(command, shell=True, cwd=work, env=_env(), capture_output=True, text=True, timeout=900)
            tail = (done.stdout + done.stderr)[-3000:]
            assert done.returncode == 0, f"README line failed: {command}\n{tail}"
            assert_nothing_failed(work, command)
        for key, check in AFTER.items():
            if line.startswith(key):
                check(work)
        ran += 1
    if not ran:
        pytest.skip("; ".join(sorted({skip_reason(ln) or "" for ln in BLOCKS[index]})))


@pytest.mark.parametrize("index", range(len(PY_BLOCKS)), ids=[f"python{i}" for i in range(len(PY_BLOCKS))])
def test_readme_python_block_runs(index: int, work: Path) -> None:
    """Each Python block runs as a script in the user's folder, after every bash block; CKPT (a
    placeholder the user fills in) is the newest checkpoint the bash blocks trained."""
    script = PY_BLOCKS[index]
    if re.search(r"\bCKPT\b", script):
        script = f"CKPT = {fill_placeholders('CKPT', work)!r}\n" + script
    done = subprocess.run([sys.executable, "-c", script], cwd=work, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"README python block {index} failed:\n{(done.stdout + done.stderr)[-3000:]}"
    assert_nothing_failed(work, f"python block {index}")
