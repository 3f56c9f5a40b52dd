"""Evaluation outputs: predictions in, metric files, figures and report sections out."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import classification_report

from cxrlab.experiments.evaluation import clinical
from cxrlab.experiments.evaluation.data import UNSEEN
from cxrlab.experiments.evaluation.figures import (
    plot_confusion_matrix,
    plot_pr,
    plot_reliability,
    plot_roc,
    plot_threshold_scores,
)
from cxrlab.experiments.evaluation.report import Section, save_figure
from cxrlab.lightning_modules.classifier import disease_indices

VAL = "val"


@dataclass
class Predictions:
    """Evaluated sample-table rows (path, label, split, known) and their probabilities [N, K]."""

    rows: pd.DataFrame
    probs: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        self.rows = self.rows.reset_index(drop=True)
        if self.probs.shape != (len(self.rows), len(self.classes)):
            raise ValueError(
                f"probs must have shape {(len(self.rows), len(self.classes))}, "
                f"got {self.probs.shape}"
            )

    def known(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(class indices [n], probabilities [n, K]) of the known-label rows of a split or 'all'."""
        mask = self.rows["known"].to_numpy(bool)
        if split != "all":
            mask = mask & self.rows["split"].eq(split).to_numpy()
        index = {c: i for i, c in enumerate(self.classes)}
        y = self.rows.loc[mask, "label"].map(index).to_numpy(np.int64)
        return y, self.probs[mask]

    def frame(self) -> pd.DataFrame:
        """The predictions.csv table: path, split, true and predicted label, every probability."""
        probs = pd.DataFrame(
            self.probs.astype(np.float64), columns=[f"prob_{c}" for c in self.classes]
        )
        return pd.concat(
            [
                pd.DataFrame(
                    {
                        "path": self.rows["path"],
                        "split": self.rows["split"],
                        "true_label": self.rows["label"],
                        "pred_label": np.asarray(self.classes)[self.probs.argmax(axis=1)],
                        "confidence": self.probs.max(axis=1).astype(np.float64),
                    }
                ),
                probs,
            ],
            axis=1,
        )


def positive_class(classes: Sequence[str], positive: str | None) -> str | None:
    """The class of the binary analysis: as given, else covid, else a 2-class model's disease."""
    if positive is not None:
        if positive.lower() == "none":
            return None
        if positive not in classes:
            raise ValueError(
                f"--positive {positive!r} is not a model class; choose one of {list(classes)}"
            )
        return positive
    by_name = [c for c in classes if c.lower() == "covid"]
    if by_name:
        return by_name[0]
    disease = disease_indices(list(classes))
    return classes[disease[0]] if len(classes) == 2 and len(disease) == 1 else None


# ---------------------------------------------------------------------------- writers


def save_figures(out: Path, figures: dict[str, Figure]) -> dict[str, list]:
    """Save figures as out/<name> and return the Section fields that show them."""
    paths = [save_figure(fig, out / name) for name, fig in figures.items()]
    return {"figures": paths, "images": list(figures)}


def _classification(
    summary: dict[str, Any], y: np.ndarray, p: np.ndarray, classes: list[str], out: Path
) -> tuple[dict, list[Section]]:
    """Confusion matrices, classification report and per-class sensitivity/specificity."""
    labels = list(range(len(classes)))
    y_pred = p.argmax(axis=1)
    report_text = classification_report(
        y, y_pred, labels=labels, target_names=classes, digits=4, zero_division=0
    )
    report = classification_report(
        y, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    (out / "classification_report.txt").write_text(report_text)
    report_json = clinical.to_jsonable(report)
    write_json(out / "classification_report.json", report_json)
    per_class = clinical.per_class_table(summary).rename(columns={"recall": "sensitivity"})
    per_class.to_csv(out / "sensitivity_specificity.csv")
    figures = {}
    for name, normalize in (("confusion_matrix", False), ("confusion_matrix_normalized", True)):
        frame = pd.DataFrame(summary[name], index=pd.Index(classes, name="true"), columns=classes)
        frame.to_csv(out / f"{name}.csv")
        figures[f"{name}.png"] = plot_confusion_matrix(
            summary["confusion_matrix"], classes, normalize
        )
    accuracy = f"Accuracy {summary['accuracy']:.4f} on {summary['n']} images."
    sections = [
        Section(
            "Classification report",
            [f"{accuracy} Sensitivity = recall; specificity is one-vs-rest."],
            tables=[per_class],
        ),
        Section(
            "Confusion matrix",
            ["Rows: true class; columns: predicted class."],
            **save_figures(out, figures),
        ),
    ]
    return {"summary": summary, "classification_report": report_json}, sections


def _curves(
    summary: dict[str, Any],
    y: np.ndarray,
    p: np.ndarray,
    classes: list[str],
    out: Path,
    n_boot: int,
) -> tuple[dict, list[Section]]:
    """One-vs-rest ROC with bootstrap CIs plus macro/micro AUC, and precision-recall curves."""
    ci = clinical.bootstrap_auc_ci(y, p, n_boot=n_boot)
    roc = clinical.roc_curves(y, p)
    pr = clinical.pr_curves(y, p)
    micro = clinical.micro_roc_curve(y, p)
    k = len(classes)
    rows = [
        {
            "class": c,
            "roc_auc": summary["per_class"][c]["auc"],
            "ci_low": ci[i][0],
            "ci_high": ci[i][1],
            "average_precision": pr[i].average_precision if i in pr else math.nan,
        }
        for i, c in enumerate(classes)
    ]
    rows += [
        {
            "class": f"{avg} average",
            "roc_auc": auc,
            "ci_low": ci[avg][0],
            "ci_high": ci[avg][1],
            "average_precision": math.nan,
        }
        for avg, auc in (("macro", summary["macro_avg"]["auc"]), ("micro", summary["micro_auc"]))
    ]
    table = pd.DataFrame(rows)
    table.to_csv(out / "auc.csv", index=False)
    # The micro-average curve is drawn as one more line, keyed after the classes.
    roc_fig = plot_roc(roc | {k: micro}, [*classes, "micro-average"], {**ci, k: ci["micro"]})
    excluded = summary["auc_excluded"]
    notes = [f"AUC with percentile bootstrap 95 % intervals ({n_boot} resamples)."]
    notes += [f"{c}: no AUC ({why})." for c, why in excluded.items()]
    sections = [
        Section("ROC curves", notes, tables=[table], **save_figures(out, {"roc.png": roc_fig})),
        Section("Precision-recall curves", **save_figures(out, {"pr.png": plot_pr(pr, classes)})),
    ]
    result = {
        "auc_ci": {
            **{c: ci[i] for i, c in enumerate(classes)},
            "macro": ci["macro"],
            "micro": ci["micro"],
        },
        "average_precision": {classes[i]: curve.average_precision for i, curve in pr.items()},
    }
    return clinical.to_jsonable(result), sections


def _binary(
    preds: Predictions, split: str, positive: str, cutoffs: Sequence[float], out: Path
) -> tuple[dict, list[Section]]:
    """Zero-FN and Youden thresholds chosen on validation and applied to `split`, plus cut-offs."""
    k = preds.classes.index(positive)
    y, p = preds.known(split)
    scores, is_pos = p[:, k], y == k
    yv, pv = preds.known(VAL)
    notes = [
        f"Positive class: {positive}; score = its probability; positive when score >= threshold."
    ]
    if (yv == k).any() and (yv != k).any():
        analysis = clinical.threshold_analysis(
            pv[:, k], yv == k, scores, is_pos, cutoffs, split_names=(VAL, split)
        )
        thresholds = analysis["thresholds"]
        chosen, cutoff_rows = analysis["chosen"], analysis["cutoffs"]
        rule_note = (
            "Zero-FN: the largest threshold with no false negatives on the validation split "
            "(hence the fewest false positives there); Youden: maximises sensitivity + "
            f"specificity - 1 on validation. Both are applied unchanged to the {split} split."
        )
        notes.append(rule_note)
        if split != "test":
            notes.append(
                f"The {split} split includes the validation images: its rows are in-sample."
            )
    else:
        thresholds, chosen = {}, pd.DataFrame()
        cutoff_rows = clinical.cutoff_table(scores, is_pos, cutoffs).assign(split=split)
        rule_note = (
            "No validation split with both positive and negative images: zero-FN and Youden "
            "thresholds are not chosen (they are never chosen on the evaluated split)."
        )
        notes.append(rule_note)
    if not chosen.empty:
        chosen.to_csv(out / "binary_thresholds.csv", index=False)
    cutoff_rows.to_csv(out / "cutoffs.csv", index=False)
    lines = {f"{rule} (val)": t for rule, t in thresholds.items()}
    lines |= {f"cut-off {c:g}": c for c in cutoffs}
    fig = plot_threshold_scores(scores, is_pos, lines)
    tables = [t for t in (chosen, cutoff_rows) if not t.empty]
    section = Section(
        f"Binary analysis: {positive}", notes, tables, **save_figures(out, {"thresholds.png": fig})
    )
    result = {
        "positive": positive,
        "thresholds": thresholds,
        "chosen": chosen,
        "cutoffs": cutoff_rows,
        "note": rule_note,
    }
    return {"binary": clinical.to_jsonable(result)}, [section]


def _calibration(y: np.ndarray, p: np.ndarray, out: Path) -> tuple[dict, list[Section]]:
    """Reliability diagram and expected calibration error of the top-label confidence."""
    cal = clinical.calibration(y, p)
    edges = np.asarray(cal["bin_edges"])
    pd.DataFrame(
        {
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "count": cal["count"],
            "confidence": cal["confidence"],
            "accuracy": cal["accuracy"],
        }
    ).to_csv(out / "calibration.csv", index=False)
    text = [
        f"Expected calibration error {cal['ece']:.4f}, maximum {cal['mce']:.4f} "
        f"({cal['n_bins']} bins)."
    ]
    section = Section(
        "Calibration", text, **save_figures(out, {"calibration.png": plot_reliability(cal)})
    )
    return {"calibration": clinical.to_jsonable(cal)}, [section]


def _unseen(preds: Predictions, out: Path) -> tuple[dict, list[Section]]:
    """How images of labels the model never saw were classified."""
    rows = preds.rows["split"] == UNSEEN
    if not rows.any():
        return {"unseen": []}, []
    pred = np.asarray(preds.classes)[preds.probs[rows.to_numpy()].argmax(axis=1)]
    table = clinical.unseen_class_table(
        preds.rows.loc[rows, "label"].tolist(), pred.tolist(), preds.classes
    )
    table.to_csv(out / "unseen_classes.csv", index=False)
    text = [
        "Labels absent from training (from every split), and how the model classified them. "
        "They are not counted in any metric above."
    ]
    return {"unseen": clinical.to_jsonable(table)}, [Section("Unseen classes", text, [table])]


def write_json(path: Path, obj: Any) -> None:
    """Write plain JSON (NaN and inf as null) with stable formatting."""
    path.write_text(json.dumps(clinical.to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_outputs(
    preds: Predictions,
    split: str,
    positive: str | None,
    cutoffs: Sequence[float],
    out: Path,
    n_boot: int = 1000,
) -> tuple[dict[str, Any], list[Section]]:
    """Write every evaluation file of `split` into `out`; return metrics.json's dict, sections."""
    y, p = preds.known(split)
    if y.size == 0:
        raise ValueError(
            f"--split {split}: no images of the model's classes {preds.classes} in that split; "
            "use --split all (or val)"
        )
    out.mkdir(parents=True, exist_ok=True)
    preds.frame().to_csv(out / "predictions.csv", index=False)
    summary = clinical.classification_summary(y, p, preds.classes)
    parts = [
        _classification(summary, y, p, preds.classes, out),
        _curves(summary, y, p, preds.classes, out, n_boot),
        _binary(preds, split, positive, cutoffs, out) if positive else ({"binary": None}, []),
        _calibration(y, p, out),
        _unseen(preds, out),
    ]
    results: dict[str, Any] = {"split": split, "n": int(y.size), "classes": list(preds.classes)}
    sections: list[Section] = []
    for result, part_sections in parts:
        results |= result
        sections += part_sections
    results["metrics"] = flat_metrics(results, split)
    return results, sections


def flat_metrics(results: dict[str, Any], split: str) -> dict[str, float]:
    """The scalar metrics of an evaluation, named like training's (test/acc, test/recall/covid)."""
    s = results["summary"]
    classes = results["classes"]
    m: dict[str, Any] = {
        "n": results["n"],
        "acc": s["accuracy"],
        "macro_f1": s["macro_avg"]["f1"],
        "weighted_f1": s["weighted_avg"]["f1"],
        "macro_precision": s["macro_avg"]["precision"],
        "macro_recall": s["macro_avg"]["recall"],
        "macro_specificity": s["macro_avg"]["specificity"],
        "auroc": s["macro_avg"]["auc"],
        "auroc_ci_low": results["auc_ci"]["macro"][0],
        "auroc_ci_high": results["auc_ci"]["macro"][1],
        "auroc_micro": s["micro_auc"],
        "ece": results["calibration"]["ece"],
        "disease_recall": float(
            np.mean([s["per_class"][classes[i]]["recall"] for i in disease_indices(classes)])
        ),
    }
    for c in classes:
        row = s["per_class"][c]
        for key, name in (
            ("recall", "recall"),
            ("specificity", "specificity"),
            ("precision", "precision"),
            ("f1", "f1"),
            ("auc", "auroc"),
        ):
            m[f"{name}/{c}"] = row[key]
    binary = results.get("binary")
    if binary:
        for rule, t in binary["thresholds"].items():
            m[f"binary/{rule}/threshold"] = t
        for row in binary["chosen"]:
            if row["split"] == split:
                for key in ("sensitivity", "specificity", "accuracy", "fp", "fn"):
                    m[f"binary/{row['rule']}/{key}"] = row[key]
        for row in binary["cutoffs"]:
            if row["split"] == split:
                for key in ("sensitivity", "specificity", "accuracy", "share_flagged"):
                    m[f"binary/cutoff_{row['threshold']:g}/{key}"] = row[key]
    m["unseen/n"] = sum(row["n"] for row in results["unseen"])
    # MLflow cannot chart missing values; an undefined metric is simply not logged.
    return {
        f"{split}/{k}": float(v) for k, v in m.items() if v is not None and math.isfinite(float(v))
    }
