"""The registry and serving: `cxrlab register` on a real `mlflow server`, models:/NAME@ALIAS taken by
evaluate and predict, and `mlflow models serve` answering what `cxrlab predict --json` answers."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from samples import write_dicom
from servers import free_port

from cxrlab.experiments.cli.main import main
from cxrlab.experiments.tracking import checkpoints

TRAIN = ("--config", "ci_tiny", "--data.image_size", "64", "--model.finetune", "frozen", "--model.lr", "0.05",
         "--explain.enabled", "false", "--quiet")


def run_cli(*args: str) -> tuple[int, str, str]:
    """`cxrlab ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def train_run(uri: str, data: Path) -> str:
    """Train ci_tiny into the store `uri`; the run id."""
    code, out, err = run_cli("train", *TRAIN, "--data.root", str(data), "--tracking_uri", uri)
    assert code == 0, err
    return next(ln.split()[2] for ln in out.splitlines() if ln.strip().startswith("MLflow run:"))


def phantom_images(root: Path) -> list[Path]:
    """`cxrlab data phantom` into root/phantom; two of its radiographs."""
    assert run_cli("data", "phantom", str(root / "phantom"), "--n_per_class", "12", "--size", "64", "--quiet")[0] == 0
    return sorted((root / "phantom" / "images").rglob("*.png"))[:2]


def dx_dicom(png: Path, path: Path) -> Path:
    """A frontal chest DX DICOM holding a phantom PNG's pixels (12 bits)."""
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.uint16) * 16
    return write_dicom(path, pixels, bits_stored=12, modality="DX", BodyPartExamined="CHEST", ViewPosition="PA")


def cli_probabilities(ref: str, images: list[Path], uri: str) -> np.ndarray:
    code, out, err = run_cli("predict", ref, *map(str, images), "--json", "--tracking_uri", uri)
    assert code == 0, err
    return np.array([list(r["probabilities"].values()) for r in json.loads(out)["predictions"]])


@pytest.mark.slow  # ~45 s: a server and two trainings; test_register_moves_the_alias is its fast sibling
def test_register_and_alias_move_over_an_mlflow_server(
    mlflow_server: str, tmp_path: Path, isolate: Any
) -> None:
    with isolate(tmp_path):
        phantom_images(tmp_path)
        first, second = train_run(mlflow_server, tmp_path / "phantom"), train_run(mlflow_server, tmp_path / "phantom")
        code, out, _ = run_cli("register", first[:8], "--name", "cxr", "--alias", "champion", "--tracking_uri", mlflow_server)
        assert code == 0 and out.strip().startswith(f"registered models:/cxr/1 (alias @champion) from run {first}")
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    with isolate(empty):  # nothing local: the model comes from the server
        code, _, err = run_cli("evaluate", "models:/cxr@champion", "--tracking_uri", mlflow_server,
                               "--data.root", str(tmp_path / "phantom"), "--out", "report", "--quiet")
        assert code == 0, err
        assert (empty / "report" / "metrics.json").is_file()
        loaded = lambda ref: torch.load(checkpoints.local_checkpoint(ref, mlflow_server), weights_only=True)["cxrlab"]["run_id"]  # noqa: E731
        assert loaded("models:/cxr@champion") == first
        code, out, _ = run_cli("register", second, "--name", "cxr", "--alias", "champion", "--tracking_uri", mlflow_server)
        assert code == 0 and "models:/cxr/2 (alias @champion)" in out
        assert loaded("models:/cxr@champion") == second and loaded("models:/cxr/1") == first
        code, _, err = run_cli("evaluate", "models:/cxr@nope", "--tracking_uri", mlflow_server)
        assert code == 2 and "versions: 1, 2; aliases: @champion" in err and len(err.strip().splitlines()) == 1
        code, _, err = run_cli("predict", "models:/other@champion", "x.png", "--tracking_uri", mlflow_server)
        assert code == 2 and "no registered model 'other' (registered: cxr)" in err
        # compare --register: the best training run by the sort metric becomes version 3.
        code, out, err = run_cli("compare", "--experiment", "ci-tiny", "--kind", "train", "--sort", "val/acc",
                                 "--register", "cxr", "--alias", "best", "--tracking_uri", mlflow_server)
        assert code == 0, err
        assert "registered models:/cxr/3 (alias @best) from run" in out


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, isolate: Any) -> Any:
    """A trained model registered as cxr@champion in a SQLite store: (root, uri, [png, dicom])."""
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    with isolate(root):
        png = phantom_images(root)[0]
        run_id = train_run(uri, root / "phantom")
        assert run_cli("register", run_id, "--name", "cxr", "--alias", "champion", "--tracking_uri", uri)[0] == 0
        yield root, uri, [png, dx_dicom(png, root / "film.dcm")]


def test_registered_pyfunc_on_decoded_base64_matches_cli(champion: Any, isolate: Any) -> None:
    import mlflow.pyfunc

    root, uri, images = champion
    with isolate(root):
        expected = cli_probabilities("models:/cxr@champion", images, uri)
        mlflow.set_tracking_uri(uri)
        try:
            model = mlflow.pyfunc.load_model("models:/cxr@champion")
        finally:
            mlflow.set_tracking_uri(None)
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in images]  # what a JSON request carries
    frame = model.predict(pd.DataFrame({"image": [base64.b64decode(e) for e in encoded]}))
    np.testing.assert_allclose(frame[[c for c in frame.columns if c.startswith("p_")]].to_numpy(float), expected, atol=1e-5)


def test_register_moves_the_alias(champion: Any) -> None:
    from mlflow import MlflowClient

    root, uri, _ = champion
    client = MlflowClient(uri)
    model_id = checkpoints.model_id_of(client, "models:/cxr@champion", uri)
    code, out, _ = run_cli("register", model_id, "--name", "cxr", "--alias", "champion", "--tracking_uri", uri)
    assert code == 0 and "registered models:/cxr/2 (alias @champion)" in out
    assert str(client.get_model_version_by_alias("cxr", "champion").version) == "2"
    code, _, err = run_cli("register", "0123456789abcdef", "--name", "cxr", "--tracking_uri", uri)
    assert code == 2 and "0123456789abcdef' not found in the tracking store" in err


def test_mlflow_models_serve_answers_as_cxrlab_predict(champion: Any) -> None:
    root, uri, images = champion
    expected = cli_probabilities("models:/cxr@champion", images, uri)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"MLFLOW_TRACKING_URI": uri}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", "models:/cxr@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow models serve did not answer in 180 s"
                time.sleep(1)
        encoded = [[base64.b64encode(p.read_bytes()).decode()] for p in images]
        answer = post(url, {"dataframe_split": {"columns": ["image"], "data": encoded}})
        rows = answer["predictions"]
        got = np.array([[r[k] for k in r if k.startswith("p_")] for r in rows])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert all(r["trust"] in ("ok", "unavailable") for r in rows)
        mapped = post(url, {"dataframe_records": [{"image": encoded[0][0]}], "params": {"heatmap": True}})
        assert np.array(mapped["predictions"][0]["gradcam"], dtype=float).ndim == 2
        with pytest.raises(urllib.error.HTTPError) as err:
            post(url, {"dataframe_records": [{"image": base64.b64encode(b"not an image").decode()}]})
        assert err.value.code == 400 and "image[0]: unreadable image" in err.value.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def post(url: str, payload: dict[str, Any]) -> Any:
    """POST a JSON request to the server's /invocations; its JSON answer."""
    request = urllib.request.Request(f"{url}/invocations", json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.loads(r.read())
