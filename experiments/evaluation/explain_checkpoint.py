"""`cxrlab explain`: the epoch-end explanation pass for any split of a checkpoint's data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cxrlab.experiments.evaluation.data import evaluation_data
from cxrlab.experiments.evaluation.evaluate import evaluation_config
from cxrlab.experiments.evaluation.explain_report import explain_split
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
    checkpoint = str(checkpoints.local_checkpoint(checkpoint, tracking_uri))  # runs:/RUN_ID
    model = load_classifier(checkpoint)
    cfg = evaluation_config(model.config, overrides or {}, checkpoint)
    data = evaluation_data(cfg.data, model.classes, cfg.seed, model.input_size)
    done = explain_split(model, data, split, cfg, focus_only=False, per_class=max_per_class)
    out_dir = Path(out) if out else Path("mlruns/explanations") / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(checkpoint).stem}"
    write_objects(done.artifacts(), out_dir)
    tags = {"cxrlab.kind": "explain", "cxrlab.checkpoint": str(Path(checkpoint).resolve()), "cxrlab.split": split}
    uri = store.resolve_uri(tracking_uri)
    run_id, experiment_id = _log_run(model.run_info.get("run_id"), checkpoint, split, done.metrics, out_dir, uri,
                                     tags | done.alarm_tags, started)
    verdict = done.explanation.verdict
    return {
        "out": str(out_dir), "metrics": done.metrics, "run_id": run_id, "n_images": len(done.images.labels),
        "verdict": verdict.sentence() if verdict is not None else None, "link": ui_link(uri, experiment_id, run_id),
    }


def _log_run(
    train_run: str | None, checkpoint: str, split: str, metrics: dict[str, float], folder: Path, uri: str,
    tags: dict[str, str], started: float,
) -> tuple[str, str]:
    """An MLflow run (kind=explain) beside the training run, holding every file of `folder`: (run id, experiment id)."""
    return log_derived_run(
        uri, train_run, "cxrlab-explain", f"explain-{split}-{Path(checkpoint).stem}",
        tags, {"checkpoint": str(Path(checkpoint).resolve()), "split": split},
        {f"{split}/{k}": v for k, v in metrics.items()}, folder, f"explain/{split}", started,
    )
