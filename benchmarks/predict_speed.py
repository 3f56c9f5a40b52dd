"""Prediction speed of cxrlab against what a user would run instead, in one run:

- predict: images/s of `predict_arrays` with every trust field (calibrated probabilities,
  out-of-distribution score, template correlation, shortcut flag; batches of 16) vs a bare
  `with torch.inference_mode(): model(x)` loop in batches of 16 over the same images (goal >= 0.8x
  on the CPU). For fairness the bare loop gets the tensors already cropped and resized to the
  model's input; predict_arrays gets the decoded [H, W] float32 arrays and does its own crop and
  resize inside the timing. Neither side reads or decodes files in the timing.
- serve: images/s of the logged model behind `mlflow models serve` (requests of 1 and of 16
  base64 PNGs, one at a time) vs `cxrlab predict CKPT IMAGE...` as a subprocess on the same files,
  the alternative without serving: each call pays process start, imports and model load.

The model is phantom_demo trained for one epoch on a small generated phantom set (a trust model is
fitted at the end of training, so the trust fields are real). Its logged model is what is served.

Run from the repository root:  python -m benchmarks.predict_speed [--only predict serve]

Each measurement is one function taking the shared `Setup` and returning `Result`s; add a new one
to MEASUREMENTS and it shows up in the table and in --only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.ratios import Result, best_seconds, format_table
from cxrlab.datamodules.images import Decoding, read_image
from cxrlab.datamodules.transforms import eval_transform
from cxrlab.experiments.evaluation.predict import BATCH, predict_arrays
from cxrlab.lightning_modules.checkpoint import load_classifier
from cxrlab.lightning_modules.classifier import CXRClassifier


@dataclass(frozen=True)
class Setup:
    """The trained model, its checkpoint and logged model, and the images shared by every measurement."""

    tmp: Path
    uri: str
    checkpoint: Path
    model_id: str
    model: CXRClassifier
    files: list[Path]
    raws: list[np.ndarray]
    args: argparse.Namespace






def predict_speed(setup: Setup) -> list[Result]:
    """Images/s of predict_arrays (all trust fields) vs a bare inference_mode forward loop."""
    model, raws, repeats = setup.model, setup.raws, setup.args.repeats
    names = [str(f) for f in setup.files]
    rows = predict_arrays(model, raws, names)  # also the warm-up of the check below
    assert rows[0]["trust"] == "ok", f"no trust model in the checkpoint: trust {rows[0]['trust']!r}"
    assert all(r["ood_score"] is not None and r["template_corr"] is not None for r in rows), rows[0]
    assert all(r["shortcut_flag"] is not None for r in rows), rows[0]
    # The bare loop's input: cropped and resized as predict_arrays does it, before the timing.
    transform = eval_transform(model.input_size, model.config.data.crop_margin)
    tensors = torch.stack([transform(torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32))[None]) for r in raws])
    batches = [tensors[i:i + BATCH].to(model.device) for i in range(0, len(tensors), BATCH)]

    def bare() -> None:
        with torch.inference_mode():
            for x in batches:
                model(x)

    n = len(raws)
    ours = best_seconds(lambda: predict_arrays(model, raws, names), repeats, warmup=setup.args.warmup)
    reference = best_seconds(bare, repeats, warmup=setup.args.warmup)
    print(f"  predict: {n} images of {raws[0].shape[0]}x{raws[0].shape[1]} px at input {model.input_size} px, "
          f"best of {repeats}: {ours:.3f} s with trust fields, {reference:.3f} s bare (goal >= 0.8x)")
    return [Result("predict", "images/s", n / ours, n / reference, f"bare inference_mode forward, batch {BATCH}")]


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload: dict[str, Any]) -> Any:
    """POST a JSON request to the server's /invocations; its JSON answer."""
    request = urllib.request.Request(f"{url}/invocations", json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def served(setup: Setup) -> Iterator[str]:
    """`mlflow models serve` of the run's logged model on a free port; its URL. Killed on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"MLFLOW_TRACKING_URI": setup.uri}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's mlflow
    log_path = setup.tmp / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["mlflow", "models", "serve", "-m", f"models:/{setup.model_id}", "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=setup.tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            start = time.perf_counter()
            deadline = time.monotonic() + setup.args.serve_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mlflow models serve exited {proc.returncode}:\n"
                                       + log_path.read_text()[-3000:])
                try:
                    with urllib.request.urlopen(f"{url}/ping", timeout=2):
                        break
                except OSError as err:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"mlflow models serve did not answer /ping in {setup.args.serve_timeout} s; "
                                           f"its log: {log_path}") from err
                    time.sleep(0.5)
            print(f"  serve: the server answered /ping after {time.perf_counter() - start:.1f} s")
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def cxrlab_command() -> list[str]:
    """The `cxrlab` console script ([project.scripts] cxrlab = cxrlab.experiments.cli.main:run)."""
    script = Path(sys.executable).parent / "cxrlab"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from cxrlab.experiments.cli.main import run; run()"]


def serve_speed(setup: Setup) -> list[Result]:
    """Images/s of the served model (requests of 1 and of 16 images) vs `cxrlab predict` per call."""
    a = setup.args
    results = []
    with served(setup) as url:
        for size in a.request_sizes:
            files = (setup.files * (size // len(setup.files) + 1))[:size]
            data = [[base64.b64encode(f.read_bytes()).decode()] for f in files]
            payload = {"dataframe_split": {"columns": ["image"], "data": data}}
            answer = post(url, payload)["predictions"]
            assert len(answer) == size and answer[0]["trust"] == "ok", answer[0]

            def requests(payload: dict[str, Any] = payload) -> None:
                for _ in range(a.requests):
                    post(url, payload)

            served_s = best_seconds(requests, a.repeats, warmup=1) / a.requests
            command = [*cxrlab_command(), "predict", str(setup.checkpoint), *map(str, files), "--json"]

            def cli(command: list[str] = command) -> None:
                subprocess.run(command, cwd=setup.tmp, check=True, capture_output=True)

            cli_s = best_seconds(cli, a.cli_repeats, warmup=0)  # a cold start is what a user pays
            print(f"  serve: {size} image(s) per request: {served_s:.3f} s per request, "
                  f"{cli_s:.2f} s per `cxrlab predict` call")
            results.append(Result(f"serve_{size}", "images/s", size / served_s, size / cli_s,
                                  f"`cxrlab predict` subprocess, {size} file(s) per call"))
    return results


MEASUREMENTS: dict[str, Callable[[Setup], list[Result]]] = {
    "predict": predict_speed,
    "serve": serve_speed,
}


def train_demo(tmp: Path, per_class: int, size: int) -> tuple[Path, str, str, list[Path]]:
    """phantom_demo trained for 1 epoch on a generated phantom set in tmp: (best checkpoint,
    tracking URI, logged model id, the phantom's image files)."""
    from mlflow import MlflowClient

    from cxrlab.datamodules.phantom import generate_phantom
    from cxrlab.experiments.cli.main import main

    folder = tmp / "phantom"
    generate_phantom(folder, n_per_class=per_class, size=size, seed=0, progress=False)
    uri = f"sqlite:///{tmp}/mlflow.db"
    out = io.StringIO()
    with contextlib.chdir(tmp), contextlib.redirect_stdout(out):  # checkpoints/ go under tmp
        code = main(["train", "--config", "phantom_demo", "--data.root", str(folder), "--trainer.max_epochs", "1",
                     "--data.num_workers", "0", "--explain.enabled", "false", "--tracking.uri", uri, "--quiet"])
    if code != 0:
        raise RuntimeError(f"cxrlab train exited {code}:\n{out.getvalue()[-3000:]}")
    checkpoint = sorted(tmp.glob("checkpoints/*/*/checkpoints/best-*.ckpt"))[-1]
    run_id = checkpoint.parent.parent.name
    model_id = MlflowClient(uri).get_run(run_id).data.tags["cxrlab.model_id"]
    return checkpoint, uri, model_id, sorted((folder / "images").rglob("*.png"))


@contextlib.contextmanager
def build_setup(args: argparse.Namespace) -> Iterator[Setup]:
    """Train the model in a temp dir and decode --images of its phantom films; removed on exit."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="predict_speed_") as name:
        tmp = Path(name)
        start = time.perf_counter()
        checkpoint, uri, model_id, files = train_demo(tmp, args.per_class, args.phantom_size)
        print(f"trained phantom_demo for 1 epoch on {len(files)} phantom images of {args.phantom_size} px "
              f"in {time.perf_counter() - start:.0f} s")
        model = load_classifier(checkpoint).to(args.device).eval()
        files = (files * (args.images // len(files) + 1))[:args.images]
        decoding = Decoding.from_data(model.config.data)
        raws = [read_image(str(f), decoding) for f in files]
        yield Setup(tmp, uri, checkpoint, model_id, model, files, raws, args)




def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device of the predict measurement, e.g. cpu or cuda:0 "
                        "(the server and `cxrlab predict` pick their own)")
    parser.add_argument("--per-class", type=int, default=20,
                        help="phantom images per class to generate and train on (4 classes)")
    parser.add_argument("--phantom-size", type=int, default=128, help="side of the generated phantom films in pixels "
                        "(the model's input is phantom_demo's 112 px)")
    parser.add_argument("--images", type=int, default=64,
                        help="images timed by predict (phantom files, repeated if fewer)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of predict and of the served requests "
                        "(best is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up passes of each predict side")
    parser.add_argument("--requests", type=int, default=5, help="requests per timed repeat of the server")
    parser.add_argument("--request-sizes", type=int, nargs="+", default=[1, 16],
                        help="images per request (and files per `cxrlab predict` call)")
    parser.add_argument("--cli-repeats", type=int, default=2,
                        help="timed `cxrlab predict` calls per request size (best is reported)")
    parser.add_argument("--serve-timeout", type=float, default=180.0,
                        help="seconds to wait for `mlflow models serve` to answer /ping")
    parser.add_argument("--only", nargs="+", choices=sorted(MEASUREMENTS), help="run only these measurements")
    args = parser.parse_args(argv)
    for flag in ("per_class", "phantom_size", "images", "repeats", "requests", "cli_repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be a positive integer")
    if args.warmup < 0 or min(args.request_sizes) < 1:
        parser.error("--warmup must be >= 0 and --request-sizes positive integers")
    return args


def main(argv: list[str] | None = None) -> list[Result]:
    """Run the selected measurements and print the table; the results."""
    args = parse_args(argv)
    names = args.only or list(MEASUREMENTS)
    with build_setup(args) as setup:
        print(f"phantom_demo (resnet18, {setup.model.input_size} px), {args.device}, "
              f"{torch.get_num_threads()} threads")
        results = [r for name in names for r in MEASUREMENTS[name](setup)]
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
