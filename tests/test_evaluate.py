"""cxrlab evaluate on a model trained for a few steps: files, numbers, thresholds, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from samples import PNG_MAGIC
from sklearn import metrics
from tiny_training import train_tiny

from cxrlab.experiments.cli.main import main
from cxrlab.experiments.evaluation.clinical import (
    classification_summary,
    micro_roc_curve,
    threshold_analysis,
)
from cxrlab.experiments.evaluation.compare import compare_table
from cxrlab.experiments.evaluation.evaluate import evaluate, evaluation_config, rows_to_predict
from cxrlab.experiments.evaluation.outputs import positive_class
from cxrlab.experiments.tracking import store

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["covid", "normal", "pneumonia"]  # the conftest dataset's, sorted as the model has them
# A frozen random backbone keeps BatchNorm statistics the same in training and evaluation, so a
# few steps give a non-degenerate model (a scratch one saturates its probabilities at 0 and 1).
# Epoch-end explanations are not what these tests are about: off, for speed.
TRAIN = (
    "--model.finetune", "frozen", "--model.lr", "0.05", "--trainer.max_epochs", "2",
    "--explain.enabled", "false",
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, csv_dataset: Path, isolate: Any) -> Any:
    """(root, data CSV, checkpoint, training run id), with the cwd in root for the whole module."""
    root = tmp_path_factory.mktemp("evaluate")
    with isolate(root):
        ckpt, run_id = train_tiny(csv_dataset, *TRAIN)
        yield root, csv_dataset, ckpt, run_id


@pytest.fixture(scope="module")
def evaluated(trained: Any) -> tuple[Path, dict[str, Any]]:
    """The test-split evaluation of the trained checkpoint: (out folder, returned results)."""
    root, _, ckpt, _ = trained
    out = root / "eval"
    return out, evaluate(ckpt, out=out, progress=False, n_boot=200)


def _relabelled(
    data: Path, to: Path, mapping: dict[str, str], extra: list[tuple[str, str]] = ()
) -> Path:
    """The dataset CSV copied to `to` (absolute paths), labels renamed, (path, label) rows added."""
    table = pd.read_csv(data)
    table["path"] = [str(data.parent / p) for p in table["path"]]
    table["mask_path"] = [str(data.parent / p) for p in table["mask_path"]]
    table["label"] = table["label"].replace(mapping)
    rows = pd.DataFrame(extra, columns=["path", "label"]).assign(patient_id=lambda t: t["path"])
    to.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([table, rows], ignore_index=True).to_csv(to, index=False)
    return to


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def test_every_output_file_is_well_formed(evaluated: tuple[Path, dict[str, Any]]) -> None:
    out, _ = evaluated
    pngs = [
        "confusion_matrix",
        "confusion_matrix_normalized",
        "roc",
        "pr",
        "thresholds",
        "calibration",
    ]
    for name in pngs:
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    prob_columns = [f"prob_{c}" for c in CLASSES]
    predictions = _csv(out / "predictions.csv")
    assert list(predictions.columns) == [
        "path",
        "split",
        "true_label",
        "pred_label",
        "confidence",
        *prob_columns,
    ]
    assert set(predictions["split"]) == {"test", "val"}  # val rows are there to choose thresholds
    assert np.allclose(predictions[prob_columns].sum(axis=1), 1.0, atol=1e-5)
    cm = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert list(cm.index) == list(cm.columns) == CLASSES
    assert np.allclose(pd.read_csv(out / "confusion_matrix_normalized.csv", index_col=0).sum(1), 1)
    report = json.loads((out / "classification_report.json").read_text())
    assert {*CLASSES, "accuracy", "macro avg", "weighted avg"} <= report.keys()
    assert "macro avg" in (out / "classification_report.txt").read_text()
    sens = pd.read_csv(out / "sensitivity_specificity.csv")
    assert {"class", "sensitivity", "specificity", "support"} <= set(sens.columns)
    auc = _csv(out / "auc.csv")
    assert auc["class"].tolist() == [*CLASSES, "macro average", "micro average"]
    assert (auc["ci_low"] <= auc["roc_auc"] + 1e-12).all() and (
        auc["roc_auc"] <= auc["ci_high"] + 1e-12
    ).all()
    assert {"rule", "split", "threshold", "fn", "fp"} <= set(
        pd.read_csv(out / "binary_thresholds.csv").columns
    )
    cutoffs = pd.read_csv(out / "cutoffs.csv")
    assert cutoffs["threshold"].tolist() == [0.5, 0.9, 0.5, 0.9]
    assert (
        pd.read_csv(out / "calibration.csv")["count"].sum()
        == (predictions["split"] == "test").sum()
    )
    m = json.loads((out / "metrics.json").read_text())
    assert {
        "summary",
        "classification_report",
        "auc_ci",
        "binary",
        "calibration",
        "unseen",
        "metrics",
    } <= m.keys()
    html = (out / "report.html").read_text()
    # Self-contained: every figure is embedded and nothing is fetched from elsewhere.
    # ... and the shortcut check's gallery of worst cases, in the section the report opens with.
    assert html.count('src="data:image/png;base64,') == len(pngs) + 1
    assert html.index("<h2>Shortcut check</h2>") < html.index("<h2>Overview</h2>")
    assert "shortcut alarm" in html.lower() and (out / "explain" / "focus.csv").is_file()
    assert m["shortcut"]["n_judged"] > 0 and "test/explain/border_focus" in m["metrics"]
    assert "http://" not in html and "https://" not in html and "<link" not in html
    md = (out / "report.md").read_text()
    assert all(f"]({name}.png)" in md for name in pngs)
    assert not (out / "unseen_classes.csv").exists()  # every label of this tree is a model class


def test_metrics_equal_sklearn_on_predictions(evaluated: tuple[Path, dict[str, Any]]) -> None:
    out, _ = evaluated
    m = json.loads((out / "metrics.json").read_text())
    classes = m["classes"]
    test = pd.read_csv(out / "predictions.csv").query("split == 'test'")
    y = test["true_label"].map(classes.index).to_numpy()
    p = test[[f"prob_{c}" for c in classes]].to_numpy()
    pred = p.argmax(1)
    flat = m["metrics"]
    assert m["n"] == len(test) == flat["test/n"]
    assert flat["test/acc"] == pytest.approx(metrics.accuracy_score(y, pred))
    assert flat["test/macro_f1"] == pytest.approx(metrics.f1_score(y, pred, average="macro"))
    recall = metrics.recall_score(y, pred, average=None, labels=range(len(classes)))
    for c, r in zip(classes, recall, strict=True):
        assert flat[f"test/recall/{c}"] == pytest.approx(r)
    assert flat["test/auroc"] == pytest.approx(metrics.roc_auc_score(y, p, multi_class="ovr"))
    cm = pd.read_csv(out / "confusion_matrix.csv", index_col=0).to_numpy()
    assert (cm == metrics.confusion_matrix(y, pred)).all()
    # Not vacuous: the probabilities differ between images (an accuracy bar would test the CPU's
    # kernels on a 2-epoch model, not the metrics).
    assert p.std(axis=0).min() > 0


def test_zero_fn_threshold_is_the_largest_without_false_negatives(
    evaluated: tuple[Path, dict[str, Any]],
) -> None:
    out, results = evaluated
    assert results["binary"]["positive"] == "covid"
    t = results["binary"]["thresholds"]["zero_fn"]
    val = pd.read_csv(out / "predictions.csv").query("split == 'val'")
    scores, positive = val["prob_covid"].to_numpy(), (val["true_label"] == "covid").to_numpy()
    assert not (positive & (scores < t)).any()  # zero false negatives on the split it was chosen on
    assert (positive & (scores < np.nextafter(t, 1.0))).any()  # any larger threshold misses one
    chosen = pd.read_csv(out / "binary_thresholds.csv").set_index(["rule", "split"])
    assert chosen.loc[("zero_fn", "val"), "fn"] == 0
    test = pd.read_csv(out / "predictions.csv").query("split == 'test'")
    flagged = test["prob_covid"] >= t
    assert (
        chosen.loc[("zero_fn", "test"), "fp"] == (flagged & (test["true_label"] != "covid")).sum()
    )


def test_run_is_logged_beside_its_training_run(
    trained: Any, evaluated: tuple[Path, dict[str, Any]]
) -> None:
    from mlflow import MlflowClient

    _, _, _, train_id = trained
    out, results = evaluated
    client = MlflowClient(store.resolve_uri())
    run = client.get_run(results["run_id"])
    assert run.data.tags["cxrlab.kind"] == "evaluate"
    assert run.data.tags["cxrlab.train_run_id"] == train_id
    assert run.info.experiment_id == client.get_run(train_id).info.experiment_id
    assert run.data.metrics["test/acc"] == results["metrics"]["test/acc"]
    logged = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {p.name for p in out.iterdir()} == logged
    # The evaluation reproduces what training measured on its test split with the same weights.
    table = compare_table([client.get_run(train_id), run], ["test/acc", "test/f1"]).set_index(
        "kind"
    )
    assert table.loc["train", "test/acc"] == pytest.approx(table.loc["evaluate", "test/acc"])
    assert table.loc["train", "test/macro_f1"] == pytest.approx(
        table.loc["evaluate", "test/macro_f1"]
    )


def test_another_process_gives_identical_predictions(
    trained: Any, evaluated: tuple[Path, dict[str, Any]]
) -> None:
    root, _, ckpt, _ = trained
    out, _ = evaluated
    # The same thread count as this process (conftest pins 1): identical inputs to the kernels.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxrlab.experiments.cli.main",
            "evaluate",
            str(ckpt),
            "--out",
            "again",
            "--quiet",
            "--n_boot",
            "50",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "cxrlab evaluate: test split" in done.stdout and "macro AUC" in done.stdout
    assert (root / "again/predictions.csv").read_bytes() == (out / "predictions.csv").read_bytes()


def test_unseen_label_is_reported_not_an_error(
    trained: Any, evaluated: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, data, ckpt, _ = trained
    out, _ = evaluated
    extra = []
    for i, src in enumerate(sorted((data.parent / "images").glob("normal_*.png"))[:3]):
        shutil.copy(src, root / f"tb_{i}.png")
        extra.append((str(root / f"tb_{i}.png"), "tuberculosis"))
    other = _relabelled(data, root / "with_tb/data.csv", {}, extra)
    code = main(
        [
            "evaluate",
            str(ckpt),
            "--data.root",
            str(other),
            "--data.allow_outside_root",  # the CSV lists the training images by absolute path
            "true",
            "--out",
            "unseen",
            "--quiet",
            "--n_boot",
            "20",
        ]
    )
    assert code == 0
    table = pd.read_csv(root / "unseen/unseen_classes.csv")
    assert table["true label"].tolist() == ["tuberculosis"]
    assert table.loc[0, "n"] == 3 == table.loc[0, CLASSES].sum()
    assert "unseen label tuberculosis (3 images)" in capsys.readouterr().out
    # Known images keep their training split: the test rows are the same images, same numbers.
    before = pd.read_csv(out / "predictions.csv").set_index("path")
    after = pd.read_csv(root / "unseen/predictions.csv").set_index("path")
    known = after[after["split"] != "unseen"]
    assert sorted(known.index) == sorted(before.index)
    assert (known.loc[before.index, "split"] == before["split"]).all()
    assert (known.loc[before.index, "prob_covid"] == before["prob_covid"]).all()
    assert (after.loc[after["split"] == "unseen", "true_label"] == "tuberculosis").all()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_exits_2(
    trained: Any, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, ckpt, _ = trained
    bad = root / f"{damage}.ckpt"
    raw = ckpt.read_bytes()
    bad.write_bytes(os.urandom(4096) if damage == "garbage" else raw[: len(raw) // 2])
    assert main(["evaluate", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxrlab: error: ") and f"{bad}: not a readable checkpoint" in err


def test_mismatched_classes_exit_2_with_the_fix(
    trained: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root, data, ckpt, _ = trained
    mapping = {"covid": "COVID-19", "normal": "Normal", "pneumonia": "Pneumonia"}
    foreign = _relabelled(data, root / "foreign/data.csv", mapping)
    args = ["--data.root", str(foreign), "--data.allow_outside_root", "true", "--quiet"]
    assert main(["evaluate", str(ckpt), *args]) == 2
    err = capsys.readouterr().err
    assert str(foreign) in err and "--data.label_map" in err and "no image has a label" in err
    assert main(["evaluate", str(ckpt), "--data.classes", "normal,covid", "--quiet"]) == 2
    assert "disagree with the checkpoint's classes" in capsys.readouterr().err


def test_rows_to_predict_adds_validation_only_when_thresholds_need_it() -> None:
    table = pd.DataFrame(
        {
            "split": ["train", "val", "test", "unseen", "test"],
            "known": [True, True, True, False, True],
        }
    )
    assert rows_to_predict(table, "test", with_val=False).index.tolist() == [2, 3, 4]
    assert rows_to_predict(table, "test", with_val=True).index.tolist() == [1, 2, 3, 4]
    assert rows_to_predict(table, "all", with_val=True).index.tolist() == [0, 1, 2, 3, 4]


def test_positive_class_defaults() -> None:
    assert positive_class(["bacteria", "covid", "normal"], None) == "covid"
    assert positive_class(["normal", "pneumonia"], None) == "pneumonia"
    assert positive_class(["bacteria", "normal", "virus"], None) is None
    assert positive_class(["bacteria", "covid"], "none") is None
    with pytest.raises(ValueError, match="--positive 'tb' is not a model class"):
        positive_class(["normal", "covid"], "tb")


def test_evaluation_config_only_changes_data_and_explain() -> None:
    from cxrlab.config import Config

    base = Config()
    cfg = evaluation_config(base, {"data.root": "elsewhere", "data.batch_size": "4"}, "x.ckpt")
    assert cfg.data.root == "elsewhere" and cfg.data.batch_size == 4
    assert cfg.model == base.model and base.data.root is None  # the checkpoint's config is left as it was
    with pytest.raises(ValueError, match="--model.backbone: evaluate rebuilds the model"):
        evaluation_config(base, {"model.backbone": "vgg16"}, "x.ckpt")


def test_micro_roc_curve_pools_every_class() -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=40)
    y = rng.integers(0, 3, 40)
    curve = micro_roc_curve(y, probs)
    pooled = metrics.roc_auc_score(np.eye(3)[y].ravel(), probs.ravel())
    assert curve.auc == pytest.approx(pooled)
    assert curve.auc == pytest.approx(
        classification_summary(y, probs, ["a", "b", "c"])["micro_auc"]
    )


def test_threshold_analysis_on_one_split_lists_it_once() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
    positive = np.array([False, True, False, True, True, False])
    a = threshold_analysis(scores, positive, scores, positive, (0.5,), split_names=("val", "val"))
    assert a["chosen"]["split"].tolist() == ["val", "val"]  # one row per rule
    assert a["chosen"]["rule"].tolist() == ["zero_fn", "youden"]
    assert a["thresholds"]["zero_fn"] == 0.4 and a["chosen"]["fn"].tolist()[0] == 0
