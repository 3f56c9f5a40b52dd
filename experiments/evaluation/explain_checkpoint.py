"""`cxrlab explain`: the epoch-end explanation pass for any split of a checkpoint's data, and
`cxrlab explain sanity`: the sanity checks of its heatmap methods."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cxrlab.experiments.evaluation.data import evaluation_data
from cxrlab.experiments.evaluation.evaluate import evaluation_config
from cxrlab.experiments.evaluation.explain_report import explain_split
from cxrlab.experiments.evaluation.sanity_report import (
    masks_note,
    run_sanity,
    sanity_metrics,
    write_sanity,
)
from cxrlab.experiments.tracking import checkpoints, store
from cxrlab.experiments.tracking.ui import ui_link
from cxrlab.experiments.tracking.writer import log_derived_run, write_objects
from cxrlab.lightning_modules.checkpoint import load_classifier


def explain_checkpoint(
    checkpoint: str,
    overrides: dict[str, Any] | None = None,
    split: str = "test",
    out: str | None = None,
    max_per_class: int | None = 50,
    tracking_uri: str | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Explain up to `max_per_class` images per class of one split; write and log the artifacts
    (the run dated from `started`, epoch seconds, else from this call)."""
    started = started or time.time()
    model, cfg, data, checkpoint = _open(checkpoint, overrides, tracking_uri)
    done = explain_split(model, data, split, cfg, focus_only=False, per_class=max_per_class)
    out_dir = _out_dir(out, "explanations", checkpoint)
    write_objects(done.artifacts(), out_dir)
    verdict = done.explanation.verdict
    logged = _log_run("explain", model, checkpoint, split, done.metrics, out_dir, tracking_uri, done.alarm_tags, started)
    return logged | {
        "out": str(out_dir), "metrics": done.metrics, "n_images": len(done.images.labels),
        "verdict": verdict.sentence() if verdict is not None else None,
    }


def sanity_checkpoint(
    checkpoint: str,
    overrides: dict[str, Any] | None = None,
    split: str = "val",
    out: str | None = None,
    per_class: int | None = None,
    tracking_uri: str | None = None,
    started: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Sanity-check the heatmap methods on up to `per_class` images per class of one split; write
    and log sanity.json, sanity.csv and the figures as a run beside the training run."""
    started = started or time.time()
    model, cfg, data, checkpoint = _open(checkpoint, overrides, tracking_uri)
    checks, images = run_sanity(model, data, split, cfg, per_class, progress)
    out_dir = _out_dir(out, "sanity", checkpoint)
    write_sanity(checks, images, out_dir)
    metrics = sanity_metrics(checks)
    logged = _log_run("sanity", model, checkpoint, split, metrics, out_dir, tracking_uri, {}, started)
    return logged | {
        "out": str(out_dir), "n_images": len(images.labels), "verdicts": [c.verdict() for c in checks.values()],
        "checks": checks, "note": masks_note(checks),
    }


def _open(checkpoint: str, overrides: dict[str, Any] | None, tracking_uri: str | None) -> tuple[Any, Any, Any, str]:
    """The model, its evaluation config, its data and the local checkpoint path (runs:/, models:/ fetched)."""
    checkpoint = str(checkpoints.local_checkpoint(checkpoint, tracking_uri))
    model = load_classifier(checkpoint)
    cfg = evaluation_config(model.config, overrides or {}, checkpoint)
    return model, cfg, evaluation_data(cfg.data, model.classes, cfg.seed, model.input_size), checkpoint


def _out_dir(out: str | None, kind: str, checkpoint: str) -> Path:
    return Path(out) if out else Path("mlruns") / kind / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(checkpoint).stem}"


def _log_run(
    kind: str, model: Any, checkpoint: str, split: str, metrics: dict[str, float], folder: Path,
    tracking_uri: str | None, tags: dict[str, str], started: float,
) -> dict[str, str]:
    """An MLflow run of `kind` (explain, sanity) beside the training run, holding every file of
    `folder`: its run id and UI link."""
    uri = store.resolve_uri(tracking_uri)
    tags = {"cxrlab.kind": kind, "cxrlab.checkpoint": str(Path(checkpoint).resolve()), "cxrlab.split": split} | tags
    run_id, experiment_id = log_derived_run(
        uri, model.run_info.get("run_id"), f"cxrlab-{kind}", f"{kind}-{split}-{Path(checkpoint).stem}",
        tags, {"checkpoint": str(Path(checkpoint).resolve()), "split": split},
        {f"{split}/{k}": v for k, v in metrics.items()}, folder, f"{kind}/{split}", started,
    )
    return {"run_id": run_id, "link": ui_link(uri, experiment_id, run_id)}
