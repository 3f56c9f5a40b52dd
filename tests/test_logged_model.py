"""The best checkpoint as an MLflow logged model: linked to its training run with its metrics, and
as a pyfunc predicting what `cxrlab predict --json` predicts, from bytes, paths and arrays."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from cxrlab.datamodules.images import Decoding, read_image
from cxrlab.experiments.cli.main import main
from cxrlab.experiments.tracking import checkpoints

TRAIN = ("--data.image_size", "64", "--model.finetune", "frozen", "--model.lr", "0.05", "--explain.enabled", "false")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, isolate: Any) -> Any:
    """One ci_tiny training on a small phantom set, in its own folder: (root, images, run id,
    model id, what train printed)."""
    root = tmp_path_factory.mktemp("logged")
    with isolate(root):
        assert main(["data", "phantom", "phantom", "--n_per_class", "12", "--size", "64", "--quiet"]) == 0
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(["train", "--config", "ci_tiny", "--data.root", "phantom", "--quiet", *TRAIN]) == 0
        client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        run = client.search_runs([client.get_experiment_by_name("ci-tiny").experiment_id])[0]
        images = sorted((root / "phantom").rglob("*.png"))
        images = [p for p in images if "mask" not in p.parts[-2] and "lesion" not in p.parts[-2]][:4]
        yield root, images, run.info.run_id, run.data.tags["cxrlab.model_id"], out.getvalue()


def cli_probabilities(capsys: pytest.CaptureFixture[str], ref: str, images: list[Path]) -> np.ndarray:
    """Per-class probabilities `cxrlab predict --json` gives, one row per image."""
    capsys.readouterr()
    assert main(["predict", ref, *map(str, images), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    return np.array([list(r["probabilities"].values()) for r in rows])


def frame_probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame.columns if c.startswith("p_")]].to_numpy(dtype=float)


def test_training_logs_one_model_linked_to_its_run(trained: Any) -> None:
    root, _, run_id, model_id, _ = trained
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ci-tiny").experiment_id
    models = client.search_logged_models(experiment_ids=[experiment])
    assert [m.model_id for m in models] == [model_id]
    model = models[0]
    assert model.name == "model" and model.source_run_id == run_id and model.status.to_proto() == 2  # READY
    linked = {m.key: m.value for m in model.metrics}
    run_metrics = client.get_run(run_id).data.metrics
    assert {"best/val/acc", "test/acc"} <= set(linked)
    assert linked["best/val/acc"] == pytest.approx(run_metrics["best/val/acc"])
    # The Models tab sorts on them: a filter on a linked metric finds the model.
    assert client.search_logged_models([experiment], filter_string="metrics.`best/val/acc` >= 0")[0].model_id == model_id


def test_train_prints_the_model_uri_that_resolves_to_its_checkpoint(trained: Any) -> None:
    root, _, _, model_id, printed = trained
    assert f"model:      models:/{model_id}" in printed
    ckpt = checkpoints.local_checkpoint(f"models:/{model_id}", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    assert ckpt.is_file() and ckpt.parent.parent.name == model_id


def test_pyfunc_predicts_as_cxrlab_predict(trained: Any, capsys: pytest.CaptureFixture[str], isolate: Any) -> None:
    import mlflow.pyfunc

    root, images, _, model_id, _ = trained
    with isolate(root):
        expected = cli_probabilities(capsys, f"models:/{model_id}", images)
        model = mlflow.pyfunc.load_model(f"models:/{model_id}")
    from_bytes = model.predict(pd.DataFrame({"image": [p.read_bytes() for p in images]}))
    from_paths = model.predict(pd.DataFrame({"path": [str(p) for p in images]}))
    decoding = Decoding.from_data(model.unwrap_python_model().model.config.data)
    array = np.stack([read_image(p, decoding) for p in images])[:, None]
    from_array = model.unwrap_python_model().predict(None, array)
    for frame in (from_bytes, from_paths, from_array):
        np.testing.assert_allclose(frame_probabilities(frame), expected, atol=1e-5)
        assert {"label", "confidence", "trust", "in_distribution", "refused"} <= set(frame.columns)
        assert "gradcam" not in frame.columns
    assert list(from_paths["image"]) == [str(p) for p in images]
    mapped = model.predict(pd.DataFrame({"image": [images[0].read_bytes()]}), params={"heatmap": True})
    cam = np.array(mapped["gradcam"].iloc[0], dtype=float)
    assert cam.ndim == 2 and np.isfinite(cam).all()


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda img: pd.DataFrame({"image": []}), "0 rows"),
        (lambda img: pd.DataFrame({"picture": [img]}), "`image` column"),
        (lambda img: pd.DataFrame({"image": [b"not an image"]}), "image[0]: unreadable image"),
        (lambda img: np.zeros((2, 3, 8, 8), np.float32), "array input of shape [2, 3, 8, 8]"),
        (lambda img: np.full((1, 1, 8, 8), 2.0, np.float32), "outside [0, 1]"),
    ],
    ids=["empty", "no-column", "corrupt-bytes", "array-shape", "array-range"],
)
def test_bad_input_is_one_line(trained: Any, make_input: Any, message: str, isolate: Any) -> None:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    root, images, _, model_id, _ = trained
    with isolate(root):
        model = mlflow.pyfunc.load_model(f"models:/{model_id}").unwrap_python_model()
    with pytest.raises(MlflowException) as err:
        model.predict(None, make_input(images[0].read_bytes()))
    assert message in err.value.message and "\n" not in err.value.message
    assert err.value.get_http_status_code() == 400


def test_sweep_tags_its_parent_with_the_best_trials_model(
    trained: Any, isolate: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna
    import yaml

    from cxrlab.experiments.sweeps.runner import run_sweep
    from cxrlab.experiments.sweeps.storage import default_storage, open_storage
    from cxrlab.experiments.sweeps.trial_runs import BEST_MODEL_TAG, RUN_ATTR

    root = trained[0]
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "experiments/configs/ci_tiny.yaml").read_text())
    raw["data"] |= {"root": str(root / "phantom"), "image_size": 64}
    raw["trainer"] |= {"limit_train_batches": 2, "limit_val_batches": 1}
    raw["tracking"]["experiment"] = "sweep-models"
    raw["explain"] = {"enabled": False}
    raw["search"] = {"sampler": "grid", "params": {"model.head": ["gap-linear", "gap-mlp"]}}
    config = root / "sweep_models.yaml"
    config.write_text(yaml.safe_dump(raw))
    with isolate(root):
        outcome = run_sweep(config, gpus="none")
        client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        study = optuna.load_study(study_name="sweep_models", storage=open_storage(default_storage("sweep_models")))
    best_run = client.get_run(study.best_trial.user_attrs[RUN_ATTR])
    assert outcome.best_model_id == best_run.data.tags["cxrlab.model_id"]
    assert client.get_run(outcome.parent_run_id).data.tags[BEST_MODEL_TAG] == outcome.best_model_id
    assert f"best model: models:/{outcome.best_model_id}" in capsys.readouterr().out
