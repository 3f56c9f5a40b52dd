"""A multi-label phantom model, trained once for the module with the shipped phantom_multilabel
config: every finding learns, the checkpoint carries its task and thresholds, the epoch-end pass
explains each positive finding, and evaluate, predict and Grad-CAM agree with independent code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from foreign import foreign_inputs
from mlflow import MlflowClient
from PIL import Image
from sklearn.metrics import roc_auc_score

from cxrlab.callbacks.explanations.display import minmax, upsample
from cxrlab.callbacks.explanations.gradcam import resolve_layer
from cxrlab.callbacks.explanations.methods import heatmaps
from cxrlab.datamodules.images import read_image
from cxrlab.datamodules.sources.findings import finding_column
from cxrlab.experiments.cli.main import main
from cxrlab.experiments.evaluation.predict import model_input, predict_arrays
from cxrlab.experiments.tracking import store
from cxrlab.lightning_modules.checkpoint import TRUST_KEY, load_classifier, read_checkpoint

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

FINDINGS = ["bacteria", "virus", "covid"]
MARGIN = 0.85  # every finding's test AUROC; seeds 0-2 gave 0.913-1.0 (the lowest: bacteria, seed 0)


def phantom_args(out: Path, seed: int) -> list[str]:
    """The README's multi-label phantom, as the config's header gives it."""
    return ["data", "phantom", str(out), "--multilabel", "--n_per_class", "60", "--size", "64",
            "--difficulty", "0.5", "--seed", str(seed), "--quiet"]


def train_multilabel(work: Path, seed: int) -> dict[str, Any]:
    """Generate and train one seed in `work`; its run, checkpoint and data folder."""
    data = work / "phantom-ml"
    assert main(phantom_args(data, seed)) == 0
    assert main(["train", "--config", "phantom_multilabel", "--data.root", str(data), "--seed", str(seed),
                 "--trainer.enable_progress_bar", "false"]) == 0
    client = MlflowClient(store.resolve_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("phantom-multilabel").experiment_id])
    return {"work": work, "data": data, "run": run, "ckpt": Path(run.data.tags["cxrlab.best_checkpoint"]),
            "uri": store.resolve_uri()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, isolate: Callable) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("multilabel")
    with isolate(work):
        return train_multilabel(work, seed=0)


def _learned(run: Any) -> dict[str, float]:
    return {f: run.data.metrics[f"test/auroc/{f}"] for f in FINDINGS}


def test_every_finding_learns(trained: dict[str, Any]) -> None:
    aurocs = _learned(trained["run"])
    assert min(aurocs.values()) > MARGIN, aurocs
    assert trained["run"].data.metrics["test/macro_auroc"] == pytest.approx(np.mean(list(aurocs.values())))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_every_finding_learns_on_other_seeds(seed: int, tmp_path: Path, isolate: Callable) -> None:
    with isolate(tmp_path):
        aurocs = _learned(train_multilabel(tmp_path, seed)["run"])
    assert min(aurocs.values()) > MARGIN, aurocs


def test_checkpoint_carries_task_monitor_and_thresholds(trained: dict[str, Any]) -> None:
    ckpt = read_checkpoint(trained["ckpt"])
    config = ckpt["hyper_parameters"]["config"]
    assert config["data"]["task"] == "multilabel" and config["trainer"]["monitor"] == "val/macro_auroc"
    assert ckpt["hyper_parameters"]["classes"] == FINDINGS
    model = load_classifier(trained["ckpt"])
    assert model.multilabel and len(model.label_thresholds) == len(FINDINGS)
    assert all(0 < t < 1 for t in model.label_thresholds)


def test_epoch_end_explains_each_finding(trained: dict[str, Any]) -> None:
    client = MlflowClient(trained["uri"])
    run_id = trained["run"].info.run_id
    last = sorted(a.path for a in client.list_artifacts(run_id, "explain") if a.is_dir)[-1]
    files = {Path(a.path).name for a in client.list_artifacts(run_id, last)}
    assert {"averages.png", "eigen_components.png", "aopc_curve.csv", "focus.csv"} <= files
    images = pd.read_csv(client.download_artifacts(run_id, f"{last}/images.csv"))
    assert set(images["label"]) == set(FINDINGS)  # one row per (film, positive finding)
    for key in ("explain/aopc_gap", "explain/lung_focus", "explain/pointing_game"):
        assert np.isfinite(client.get_metric_history(run_id, key)[-1].value), key


def test_evaluate_per_finding_agrees_with_sklearn(trained: dict[str, Any], isolate: Callable) -> None:
    out = trained["work"] / "evaluation"
    with isolate(trained["work"]):
        assert main(["evaluate", str(trained["ckpt"]), "--out", str(out), "--n_boot", "200", "--quiet"]) == 0
    preds = pd.read_csv(out / "predictions.csv")
    truth = pd.read_csv(trained["data"] / "metadata.csv").assign(
        path=lambda t: [str((trained["data"] / p).resolve()) for p in t["path"]])
    merged = preds.assign(path=[str(Path(p).resolve()) for p in preds["path"]]).merge(truth, on="path")
    per_label = pd.read_csv(out / "per_label.csv").set_index("finding")
    for f in FINDINGS:
        expected = roc_auc_score(merged[finding_column(f)], merged[f"prob_{f}"])
        assert per_label.loc[f, "auroc"] == pytest.approx(expected, abs=1e-9)
        for key in ("auroc", "auprc"):
            assert per_label.loc[f, f"{key}_ci_low"] <= per_label.loc[f, key] <= per_label.loc[f, f"{key}_ci_high"]
    results = json.loads((out / "metrics.json").read_text())
    assert results["task"] == "multilabel" and set(results["thresholds"]) == set(FINDINGS)
    report = (out / "report.html").read_text()
    for heading in ("Shortcut check", "Per finding", "Label co-occurrence", "Can these predictions be trusted?"):
        assert heading in report
    assert {"roc.png", "pr.png", "cooccurrence.png"} <= {p.name for p in out.iterdir()}
    # The trust model's out-of-distribution test on the run's own test films: few flagged, not foreign.
    trust = results["trust"]
    assert trust["n"] == len(preds) == len(pd.read_csv(out / "trust.csv")) and not trust["foreign"]
    assert trust["ood_share"] <= 0.10 and "atypical_share" not in trust and "atypical heatmap" not in report


def test_predict_lists_every_finding_over_its_threshold(trained: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    images = sorted((trained["data"] / "images" / "findings").glob("*.png"))[:4]
    assert main(["predict", str(trained["ckpt"]), *map(str, images), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    for row in rows:
        present = {f for f, p in row["probabilities"].items() if p >= row["thresholds"][f]}
        assert set(row["findings"]) == present
        assert row["label"] == ("|".join(sorted(present, key=lambda f: -row["probabilities"][f])) or "No Finding")


def test_trust_passes_unseen_phantom_films_and_flags_foreign_inputs(
    trained: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    """The multi-label trust model (out-of-distribution test alone) fitted at the end of training:
    films of a phantom set the model never saw pass, every foreign kind is flagged, and predict says so."""
    ckpt = read_checkpoint(trained["ckpt"])
    assert TRUST_KEY in ckpt and ckpt[TRUST_KEY]["temperature"] == 1.0 and not len(ckpt[TRUST_KEY]["templates"])
    model = load_classifier(trained["ckpt"])
    unseen = trained["work"] / "unseen"
    assert main(phantom_args(unseen, seed=100)) == 0
    fresh = [read_image(p) for p in sorted((unseen / "images").rglob("*.png"))]
    rows = predict_arrays(model, fresh, ["phantom"] * len(fresh))
    flagged = np.mean([not r["in_distribution"] for r in rows])
    assert flagged <= 0.10, f"{flagged:.0%} of {len(fresh)} unseen phantom films flagged out of distribution"
    shares = {kind: np.mean([not r["in_distribution"] for r in predict_arrays(model, images, [kind] * len(images))])
              for kind, images in foreign_inputs(fresh).items()}
    assert all(s >= 0.9 for s in shares.values()), shares
    noise = trained["work"] / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(noise)
    assert main(["predict", str(trained["ckpt"]), str(noise)]) == 0
    out = capsys.readouterr().out
    assert "OUT OF DISTRIBUTION" in out and "1 of 1 images are out of distribution" in out


def test_gradcam_per_finding_matches_pytorch_grad_cam(trained: dict[str, Any]) -> None:
    model = load_classifier(trained["ckpt"])
    layer_name = model.config.explain.target_layer
    layer = resolve_layer(model, layer_name)
    paths = sorted((trained["data"] / "images" / "findings").glob("*.png"))[:3]
    x = model_input(model, [read_image(p) for p in paths])
    size = x.shape[-1]
    ours = minmax(upsample(heatmaps(model, layer_name, x, "gradcam"), size))  # [N, K, S, S]
    compared = 0
    for j in range(len(FINDINGS)):
        with pgc.GradCAM(model=model, target_layers=[layer]) as cam:
            shield = layer.register_forward_hook(lambda m, i, o: o.clone())  # see tests/test_gradcam.py
            try:
                theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(j)] * len(x)))
            finally:
                shield.remove()
        for b in range(len(x)):
            if theirs[b].max() == 0 and ours[b, j].max() == 0:
                continue
            r = torch.corrcoef(torch.stack([ours[b, j].flatten(), theirs[b].flatten()]).double())[0, 1].item()
            assert r > 0.999, (FINDINGS[j], b, r)
            compared += 1
    assert compared >= len(x) * len(FINDINGS) // 2


def test_compare_reads_multilabel_runs(trained: dict[str, Any], isolate: Callable) -> None:
    out = trained["work"] / "comparison"
    with isolate(trained["work"]):
        assert main(["compare", "--experiment", "phantom-multilabel", "--metrics",
                     "val/macro_auroc,test/auroc/bacteria", "--out", str(out)]) == 0
    table = pd.read_csv(next(out.glob("*.csv")))
    assert any("macro_auroc" in c for c in table.columns)


def test_sanity_checks_run_on_each_finding(trained: dict[str, Any], isolate: Callable) -> None:
    out = trained["work"] / "sanity"
    with isolate(trained["work"]):
        assert main(["explain", "sanity", str(trained["ckpt"]), "--methods", "gradcam", "--n", "1",
                     "--out", str(out), "--quiet"]) == 0
    numbers = json.loads((out / "sanity.json").read_text())
    assert set(numbers) == {"gradcam", "edge"} and not numbers["edge"]["passes"]
    assert numbers["gradcam"]["pointing_game"] is not None  # the phantom's lesion masks, per finding
