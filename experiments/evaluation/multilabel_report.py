"""cxrlab evaluate on a multi-label checkpoint: per-finding AUROC with bootstrap CIs, AUPRC, the
F1-best threshold chosen on validation, sensitivity, specificity and calibration on the evaluated
split, ROC/PR curves and the label co-occurrence matrix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.config import Config
from cxrlab.datamodules.datamodule import CXRDataModule
from cxrlab.datamodules.sources.findings import NO_FINDING
from cxrlab.experiments.evaluation.clinical import (
    binary_metrics,
    bootstrap_binary_ci,
    calibration,
    label_curves,
)
from cxrlab.experiments.evaluation.data import EvaluationData
from cxrlab.experiments.evaluation.figures import plot_confusion_matrix, plot_pr, plot_roc
from cxrlab.experiments.evaluation.inference import predict_table
from cxrlab.experiments.evaluation.outputs import VAL, save_figures
from cxrlab.experiments.evaluation.report import Section, text_table
from cxrlab.lightning_modules.classifier import CXRClassifier
from cxrlab.lightning_modules.label_metrics import f1_thresholds, label_scores


def multilabel_data(model: CXRClassifier, cfg: Config) -> tuple[EvaluationData, CXRDataModule]:
    """The checkpoint's data read and split as in training (same seed and rule), every row known."""
    data = cfg.data.model_copy(update={"image_size": model.input_size, "labels": list(model.classes)})
    dm = CXRDataModule(data, seed=cfg.seed)
    table = dm.prepare_table().assign(known=True)
    return EvaluationData(table, dm.skipped, str(data.root)), dm


def label_table(probs: np.ndarray, targets: np.ndarray, classes: list[str], thresholds: list[float],
                n_boot: int, seed: int) -> pd.DataFrame:
    """One row per finding: counts, AUROC [95 % CI], AUPRC, the validation threshold and what it gives here."""
    rows = []
    for j, name in enumerate(classes):
        known = ~np.isnan(targets[:, j])
        y, p = (targets[known, j] == 1).astype(int), probs[known, j].astype(np.float64)
        row: dict[str, Any] = {"finding": name, "positives": int(y.sum()), "negatives": int((1 - y).sum())}
        if y.any() and not y.all():
            two = np.stack([1 - p, p], axis=1)  # a finding is its own two-class problem
            ci = bootstrap_binary_ci(p, y, n_boot=n_boot, seed=seed)
            at = binary_metrics(p, y.astype(bool), thresholds[j])
            row |= {f"{key}_ci_{end}": ci[key][i] for key in ("auroc", "auprc") for i, end in enumerate(("low", "high"))}
            row |= {"sensitivity": at["sensitivity"], "specificity": at["specificity"], "ece": calibration(y, two)["ece"]}
        row["threshold"] = thresholds[j]
        rows.append(row)
    scores = label_scores(probs, targets, classes)
    table = pd.DataFrame(rows)
    for key in ("auroc", "auprc", "f1"):
        table.insert(3, key, [scores.get(f"{key}/{c}", math.nan) for c in classes])
    return table


def cooccurrence(targets: np.ndarray) -> np.ndarray:
    """[L, L] images positive for both findings (the diagonal: for each)."""
    positive = (targets == 1).astype(np.int64)
    return positive.T @ positive


def split_rows(data: EvaluationData, split: str) -> pd.DataFrame:
    """The rows of the evaluated split (every row for `all`)."""
    return data.table if split == "all" else data.table[data.table["split"] == split]


def multilabel_outputs(
    model: CXRClassifier, cfg: Config, dm: CXRDataModule, data: EvaluationData, split: str, probs: np.ndarray,
    out: Path, device: Any, n_boot: int, progress: bool,
) -> tuple[dict[str, Any], list[Section]]:
    """Score the split's predicted `probs` (split_rows' order) at each finding's threshold, chosen
    on validation, which is predicted here."""
    table = data.table
    rows = split_rows(data, split)
    if rows.empty:
        raise ValueError(f"{data.where}: the {split} split holds no images; choose --split val, test or all")
    val = table[table["split"] == VAL]
    targets = dm.targets(rows)
    if len(val):
        thresholds = f1_thresholds(predict_table(model, val, cfg.data, device, progress), dm.targets(val))
        chosen = "the F1-best cut on the validation split"
    else:
        thresholds = model.label_thresholds or [0.5] * len(model.classes)
        chosen = "the checkpoint's (no validation split here)"
    per_label = label_table(probs, targets, model.classes, thresholds, n_boot, cfg.seed)
    scores = label_scores(probs, targets, model.classes)
    out.mkdir(parents=True, exist_ok=True)
    per_label.to_csv(out / "per_label.csv", index=False)
    frame = rows[["path", "label", "split"]].reset_index(drop=True)
    frame[[f"prob_{c}" for c in model.classes]] = probs
    frame.to_csv(out / "predictions.csv", index=False)
    rocs, prs = label_curves(targets, probs)
    ci = {key: {j: (r[f"{key}_ci_low"], r[f"{key}_ci_high"]) for j, r in per_label.iterrows()
                if not math.isnan(r.get(f"{key}_ci_low", math.nan))} for key in ("auroc", "auprc")}
    co = cooccurrence(targets)
    figures = save_figures(out, {
        "roc.png": plot_roc(rocs, model.classes, ci["auroc"]),
        "pr.png": plot_pr(prs, model.classes, ci["auprc"]),
        "cooccurrence.png": plot_confusion_matrix(co, model.classes, axes=("Finding", "Finding"),
                                                  title=f"Images with both findings ({split})"),
    })
    metrics = {f"{split}/{k}": v for k, v in scores.items() if math.isfinite(v)}
    results = {
        "split": split, "n": len(rows), "classes": list(model.classes), "task": "multilabel",
        "thresholds": dict(zip(model.classes, thresholds, strict=True)), "per_label": per_label.to_dict("records"),
        "macro_auroc": scores["macro_auroc"], "micro_auroc": scores["micro_auroc"], "metrics": metrics,
        "no_finding": int((rows["label"] == NO_FINDING).sum()),
    }
    text = [
        f"{len(rows)} images of the {split} split, {results['no_finding']} without any finding. Each finding is "
        f"its own yes/no question: AUROC and AUPRC with 95 % bootstrap CIs ({n_boot} resamples), and at the threshold "
        f"({chosen}) sensitivity, specificity and F1. Blank labels (and uncertain ones under "
        f"data.uncertain: ignore) are left out of their finding's numbers. ECE: calibration of the finding's probability.",
        f"Macro AUROC {scores['macro_auroc']:.3f}, micro AUROC {scores['micro_auroc']:.3f}.",
    ]
    sections = [
        Section("Per finding", text=text, tables=[per_label.round(3)], **figures),
        Section("Label co-occurrence", text=["How often findings appear together: the model sees them together, "
                                              "so a heatmap of one may draw on the other."],
                tables=[pd.DataFrame(co, index=model.classes, columns=model.classes)]),
    ]
    return results, sections


def multilabel_summary(results: dict[str, Any]) -> list[str]:
    """The terminal lines of a multi-label evaluation."""
    table = pd.DataFrame(results["per_label"])
    shown = ["finding", "positives", "auroc", "auroc_ci_low", "auroc_ci_high", "threshold", "sensitivity", "specificity"]
    table = table[[c for c in shown if c in table.columns]]
    return [
        f"== cxrlab evaluate: {results['split']} split, {results['n']} images, {len(results['classes'])} findings ==",
        *([results["shortcut"]["verdict"]] if "shortcut" in results else []),
        text_table(table.round(3)),
        f"macro AUROC {results['macro_auroc']:.3f}   micro AUROC {results['micro_auroc']:.3f}",
    ]
