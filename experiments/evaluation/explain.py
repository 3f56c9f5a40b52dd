"""`cxrlab explain`: the epoch-end explanation set for any split of a checkpoint's data, and
`cxrlab explain compare A B`: heatmap robustness between two heatmap sets."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from callbacks.explanations.explain_set import (
    check_aopc_grid,
    explain_images,
    explanation_artifacts,
    explanation_metrics,
    load_heatmap_archive,
    robustness,
)
from callbacks.explanations.shortcut import TAG as SHORTCUT_TAG
from datamodules.images import Decoding
from datamodules.probe import load_image_set, stratified_sample
from experiments.evaluation.data import evaluation_data
from experiments.evaluation.evaluate import evaluation_config
from experiments.tracking import store as tracking
from lightning_modules.checkpoint import load_classifier, read_checkpoint

HEATMAP_SET = re.compile(r"^explain/([^/]+)/heatmaps\.npz$")


def explain_checkpoint(
    checkpoint: str,
    overrides: dict[str, Any] | None = None,
    split: str = "test",
    out: str | None = None,
    max_per_class: int | None = 50,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Explain up to `max_per_class` images per class of one split; write and log the artifacts."""
    checkpoint = str(tracking.local_checkpoint(checkpoint, tracking_uri))  # runs:/RUN_ID
    ckpt = read_checkpoint(checkpoint)
    model = load_classifier(checkpoint, ckpt)
    cfg = evaluation_config(model.config, overrides or {}, checkpoint)
    settings = cfg["explain"]
    check_aopc_grid(model.input_size, settings["aopc"]["region"], settings["aopc"]["steps"])
    data = evaluation_data(cfg["data"], model.classes, cfg["seed"], model.input_size)
    rows = data.table[data.table["known"]]
    rows = rows if split == "all" else rows[rows["split"] == split]
    if rows.empty:
        raise ValueError(
            f"{data.where}: the {split} split has no images of the model's classes; choose --split val, test or all"
        )
    images = load_image_set(
        stratified_sample(rows, max_per_class, cfg["seed"]), model.classes, model.input_size,
        cfg["data"]["crop_margin"], Decoding.from_data(cfg["data"]),
    )
    es = explain_images(
        model, images.images, images.labels, model.classes, settings,
        lung_masks=images.lung_masks, lesion_masks=images.lesion_masks, seed=cfg["seed"],
    )
    metrics = explanation_metrics(es)
    artifacts = explanation_artifacts(es)
    artifacts["images.csv"] = images.table[["path", "label", "split"]]
    out_dir = Path(out) if out else Path("mlruns/explanations") / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(checkpoint).stem}"
    tracking.write_objects(artifacts, out_dir)
    tags = {"cxrlab.kind": "explain", "cxrlab.checkpoint": str(Path(checkpoint).resolve()), "cxrlab.split": split}
    if es.verdict is not None and es.verdict.n_judged:
        tags[SHORTCUT_TAG] = "yes" if es.verdict.alarm else "no"
    run_id = _log_run(model.run_info.get("run_id"), checkpoint, split, metrics, out_dir, tracking_uri, tags)
    verdict = es.verdict.sentence() if es.verdict is not None else None
    return {"out": str(out_dir), "metrics": metrics, "run_id": run_id, "n_images": len(images.labels), "verdict": verdict}


def _log_run(
    train_run: str | None, checkpoint: str, split: str, metrics: dict[str, float], folder: Path, uri: str | None,
    tags: dict[str, str],
) -> str:
    """An MLflow run (kind=explain) beside the training run, holding every file of `folder`."""
    run_id, _ = tracking.log_derived_run(
        tracking.resolve_uri(uri), train_run, "cxrlab-explain", f"explain-{split}-{Path(checkpoint).stem}",
        tags, {"checkpoint": str(Path(checkpoint).resolve()), "split": split},
        {f"{split}/{k}": v for k, v in metrics.items()}, folder, f"explain/{split}",
    )
    return run_id


# --------------------------------------------------------------------------- compare


def heatmap_set(ref: str, uri: str | None = None) -> tuple[Any, Any, list[str]]:
    """A heatmap set from a heatmaps.npz file, a folder holding one, or an MLflow run id."""
    path = Path(ref)
    if path.is_file():
        return load_heatmap_archive(str(path))
    if (path / "heatmaps.npz").is_file():
        return load_heatmap_archive(str(path / "heatmaps.npz"))
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking.resolve_uri(uri))
    try:
        client.get_run(ref)
    except MlflowException:
        raise ValueError(f"{ref}: neither a heatmaps.npz, a folder with one, nor an MLflow run id") from None
    found = sorted(
        a.path for d in client.list_artifacts(ref, "explain") if d.is_dir
        for a in client.list_artifacts(ref, d.path) if HEATMAP_SET.match(a.path)
    )
    if not found:
        raise ValueError(f"run {ref} has no explain/*/heatmaps.npz; train with explain.enabled or run cxrlab explain")
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(ref, found[-1], tmp)
        return load_heatmap_archive(local)


def explain_compare(a: str, b: str, out: str | None = None, uri: str | None = None, display_size: int = 224) -> pd.DataFrame:
    """Robustness table between two heatmap sets (and its CSV in `out`)."""
    table = robustness(heatmap_set(a, uri), heatmap_set(b, uri), display_size)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(out) / "heatmap_robustness.csv", index=False)
    return table
