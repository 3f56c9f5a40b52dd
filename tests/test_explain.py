"""Explanations end to end: the epoch-end callback, `cxrlab explain`, `explain compare` and
`evaluate --explain`, on a real training run of the tiny CSV dataset (which has lung masks)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from cxrlab.datamodules.probe import load_image_set, stratified_sample
from cxrlab.experiments.cli.main import main
from cxrlab.experiments.tracking import store

# 64 px and layer3 give 4x4 Grad-CAM maps (layer4 of resnet18 would be 2x2 at this size).
TRAIN = [
    "train", "--config", "ci_tiny", "--data.image_size", "64", "--trainer.max_epochs", "2",
    "--explain.target_layer", "backbone.layer3", "--explain.aopc.region", "16",
    "--explain.aopc.steps", "6", "--explain.probe_per_class", "3",
]
EPOCH_FILES = {
    "heatmaps_gradcam.png", "averages.png", "argmax_map.png", "boxplots.png", "eigen_components.png",
    "eigen_variance.csv", "avg_pc1_corr.csv", "aopc_curve.png", "aopc_curve.csv", "focus.csv",
    "heatmaps.npz",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, csv_dataset: Path, isolate: Callable) -> dict[str, Any]:
    """One 2-epoch ci_tiny run with explanations every epoch; its store, run and checkpoint."""
    work = tmp_path_factory.mktemp("explain")
    with isolate(work):
        assert main([*TRAIN, "--data.root", str(csv_dataset)]) == 0
        client = MlflowClient(store.resolve_uri())
        (run,) = client.search_runs([client.get_experiment_by_name("ci-tiny").experiment_id])
        ckpt = Path(run.data.tags["cxrlab.best_checkpoint"])
        return {"work": work, "run": run, "ckpt": ckpt, "uri": store.resolve_uri()}


def artifact_names(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, folder)}


def test_callback_logs_metrics_every_epoch(trained: dict[str, Any]) -> None:
    client = MlflowClient(trained["uri"])
    run_id = trained["run"].info.run_id
    mask_free = ("explain/border_focus", "explain/corner_focus", "explain/outside_body_focus", "explain/shortcut_share")
    for key in ("explain/aopc", "explain/aopc_random", "explain/aopc_gap", "explain/lung_focus", *mask_free):
        history = client.get_metric_history(run_id, key)
        assert len(history) == 2, key  # one value per epoch
        assert all(np.isfinite(m.value) for m in history)
    gap = client.get_metric_history(run_id, "explain/aopc_gap")[-1].value
    aopc = client.get_metric_history(run_id, "explain/aopc")[-1].value
    rand = client.get_metric_history(run_id, "explain/aopc_random")[-1].value
    assert gap == pytest.approx(aopc - rand)
    assert "best/explain/aopc" in trained["run"].data.metrics  # snapshot of the best epoch
    assert client.get_run(run_id).data.tags["cxrlab.shortcut_alarm"] in ("yes", "no")


def test_callback_writes_every_artifact_per_epoch(trained: dict[str, Any]) -> None:
    client = MlflowClient(trained["uri"])
    run_id = trained["run"].info.run_id
    assert {Path(a.path).name for a in client.list_artifacts(run_id, "explain")} == {"epoch_000", "epoch_001"}
    assert EPOCH_FILES <= artifact_names(client, run_id, "explain/epoch_001")
    local = client.download_artifacts(run_id, "explain/epoch_001/heatmaps.npz", str(trained["work"]))
    with np.load(local) as z:
        # 3 probe images per class x 3 classes, all-class maps at layer3's 4x4 resolution.
        assert z["heatmaps"].shape == (9, 3, 4, 4)
        assert sorted(np.bincount(z["labels"]).tolist()) == [3, 3, 3]
        assert (z["heatmaps"] >= 0).all()
        np.testing.assert_allclose(z["probs"].sum(1), 1.0, atol=1e-5)


def test_every_n_epochs_and_last_epoch(in_tmp_cwd: Path, csv_dataset: Path) -> None:
    args = [*TRAIN, "--data.root", str(csv_dataset), "--trainer.max_epochs", "4", "--explain.every_n_epochs", "3"]
    args += ["--explain.eigen", "false", "--tracking.log_checkpoint", "false"]
    assert main(args) == 0
    client = MlflowClient(store.resolve_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("ci-tiny").experiment_id])
    # epoch index 2 is the 3rd epoch (due), index 3 is the last; eigen off leaves its files out.
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "explain")} == {"epoch_002", "epoch_003"}
    assert "averages.png" not in artifact_names(client, run.info.run_id, "explain/epoch_003")
    # The best epoch's snapshot holds explanations only if that epoch computed them, never stale ones.
    best = int(re.search(r"best-epoch(\d+)", run.data.tags["cxrlab.best_checkpoint"]).group(1))
    explained = dict(zip((2, 3), (m.value for m in client.get_metric_history(run.info.run_id, "explain/lung_focus")), strict=True))
    assert run.data.metrics.get("best/explain/lung_focus") == explained.get(best)


def test_aopc_grid_too_coarse_is_a_clear_error(in_tmp_cwd: Path, csv_dataset: Path, capsys: pytest.CaptureFixture) -> None:
    code = main([*TRAIN, "--data.root", str(csv_dataset), "--explain.aopc.region", "40", "--explain.aopc.steps", "5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "explain.aopc.steps=5 exceeds the 4 regions of 40 px on a 64 px input" in err


def test_explain_command_on_test_split(trained: dict[str, Any], isolate: Callable, capsys: pytest.CaptureFixture) -> None:
    out = trained["work"] / "explain_out"
    with isolate(trained["work"]):
        assert main(["explain", str(trained["ckpt"]), "--split", "test", "--out", str(out)]) == 0
    assert EPOCH_FILES | {"images.csv"} <= {p.name for p in out.iterdir()}
    client = MlflowClient(trained["uri"])
    runs = client.search_runs(
        [trained["run"].info.experiment_id], "tags.`cxrlab.kind` = 'explain'"
    )
    assert len(runs) == 1
    assert runs[0].data.tags["cxrlab.train_run_id"] == trained["run"].info.run_id
    assert "test/explain/aopc" in runs[0].data.metrics
    assert "heatmaps.npz" in artifact_names(client, runs[0].info.run_id, "explain/test")
    assert "explain/aopc" in capsys.readouterr().out


def test_explain_compare_identical_sets_correlate_perfectly(trained: dict[str, Any], isolate: Callable, capsys: pytest.CaptureFixture) -> None:
    run_id = trained["run"].info.run_id
    with isolate(trained["work"]):
        # The same run twice: its last epoch's heatmap set against itself.
        assert main(["explain", "compare", run_id, run_id, "--out", "cmp"]) == 0
        table = (trained["work"] / "cmp" / "heatmap_robustness.csv").read_text()
    assert "average_corr" in table
    printed = capsys.readouterr().out
    assert "mean average-heatmap correlation (same class): 1.000" in printed


def test_explain_compare_rejects_unknown_reference(trained: dict[str, Any], isolate: Callable, capsys: pytest.CaptureFixture) -> None:
    with isolate(trained["work"]):
        assert main(["explain", "compare", "nope-not-a-run", trained["run"].info.run_id]) == 2
    assert "nope-not-a-run: neither a heatmaps.npz" in capsys.readouterr().err


def test_evaluate_explain_adds_report_section(trained: dict[str, Any], isolate: Callable) -> None:
    out = trained["work"] / "eval"
    with isolate(trained["work"]):
        # The sanity section (tests/test_sanity_cli.py checks it) on one image per class: size alone.
        assert main(["evaluate", str(trained["ckpt"]), "--split", "test", "--positive", "covid", "--explain", "--out", str(out),
                     "--explain.sanity.per_class", "1"]) == 0
    files = {p.name for p in (out / "explain").iterdir()}
    assert {"averages.png", "aopc_curve.png", "heatmaps.npz"} <= files
    assert any(name.startswith("cases_") for name in files)
    html = (out / "report.html").read_text()
    assert "Explanations" in html
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert "test/explain/aopc" in metrics
    assert "explain/" in (out / "report.md").read_text()


def test_probe_masks_follow_the_image_geometry(csv_dataset: Path) -> None:
    """Crop and resize move the mask exactly like the image, so focus compares the same pixels."""
    from cxrlab.datamodules.sources import csv_source

    table = stratified_sample(csv_source(csv_dataset), 2, seed=0)
    full = load_image_set(table, ["covid", "normal", "pneumonia"], 32, margin=0.0)
    cropped = load_image_set(table, ["covid", "normal", "pneumonia"], 32, margin=0.25)
    assert full.lung_masks is not None and full.lesion_masks is None
    assert full.lung_masks.shape == (len(table), 32, 32)
    # The lung ellipses sit at x = 0.3 and 0.7: a 25 % crop keeps their middles, which then
    # span a larger share of the (resized) field of view.
    assert cropped.lung_masks.float().mean() > full.lung_masks.float().mean()
    assert torch.equal(full.labels, torch.tensor([0, 0, 1, 1, 2, 2]))


def test_heatmap_archive_round_trip(trained: dict[str, Any]) -> None:
    from cxrlab.callbacks.explanations.records import load_heatmap_archive

    client = MlflowClient(trained["uri"])
    local = client.download_artifacts(trained["run"].info.run_id, "explain/epoch_000/heatmaps.npz", str(trained["work"]))
    maps, labels, classes = load_heatmap_archive(Path(local).read_bytes())
    assert classes == ["covid", "normal", "pneumonia"]
    assert maps.shape[:2] == (len(labels), 3)
    from_path = load_heatmap_archive(local)  # a file path reads the same arrays as the bytes
    np.testing.assert_array_equal(from_path[0], maps)
    np.testing.assert_array_equal(from_path[1], labels)
