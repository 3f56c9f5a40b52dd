"""Evaluation figures: confusion matrix, ROC/PR curves, reliability diagram, threshold histograms."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cxrlab.experiments.evaluation.clinical import PrCurve, RocCurve, label_curves, roc_curves

if TYPE_CHECKING:
    import torch

# Figures are built without pyplot: no global figure registry to leak from, and PNG rendering
# uses the Agg canvas whatever backend the process has selected.


def plot_confusion_matrix(
    cm: np.ndarray | Sequence[Sequence[float]],
    class_names: Sequence[str],
    normalize: bool = False,
    axes: tuple[str, str] = ("True", "Predicted"),
    title: str = "Confusion matrix",
) -> Figure:
    """Confusion matrix heatmap (rows = true, columns = predicted) with annotated cells; `axes` and
    `title` name other square count tables (label co-occurrence)."""
    values = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if values.shape != (k, k):
        raise ValueError(f"cm must be square with one row per class ({k}), got {values.shape}")
    if normalize:
        rows = values.sum(axis=1, keepdims=True)
        values = np.divide(values, rows, out=np.zeros_like(values), where=rows > 0)
    integral = not normalize and np.array_equal(values, np.round(values))
    fig = Figure(figsize=(1.2 * k + 2.5, 1.2 * k + 1.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel(axes[1])
    ax.set_ylabel(axes[0])
    ax.set_title(title + (" (row-normalised)" if normalize else ""))
    # White text on dark cells keeps every count legible.
    dark = values > (values.max() / 2 if values.max() > 0 else np.inf)
    for (i, j), v in np.ndenumerate(values):
        text = f"{int(v)}" if integral else f"{v:.2f}"
        ax.text(j, i, text, ha="center", va="center", color="white" if dark[i, j] else "black")
    return fig


def _ci_text(ci: Mapping[Any, tuple[float, float]] | None, key: int) -> str:
    """' [lo–hi]' for a class with a finite CI, else ''."""
    if ci is None or key not in ci or not np.isfinite(ci[key]).all():
        return ""
    lo, hi = ci[key]
    return f" [{lo:.3f}–{hi:.3f}]"


def _plot_curves(
    curves: Mapping[int, tuple[np.ndarray, ...]],
    class_names: Sequence[str],
    xy: Callable[[Any], tuple[np.ndarray, np.ndarray]],
    label: Callable[[int, Any], str],
    drawstyle: str = "default",
) -> tuple[Figure, Axes]:
    """One line per class curve on a square unit-box axes; shared by ROC and PR plots."""
    fig = Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for c, curve in curves.items():
        if not 0 <= c < len(class_names):
            raise ValueError(f"curve key {c} has no entry in class_names ({len(class_names)})")
        ax.plot(*xy(curve), lw=1.8, drawstyle=drawstyle, label=label(c, curve))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    return fig, ax


def plot_roc(
    curves: Mapping[int, RocCurve],
    class_names: Sequence[str],
    ci: Mapping[Any, tuple[float, float]] | None = None,
) -> Figure:
    """One-vs-rest ROC curves with AUC (and bootstrap CI when given) in the legend."""
    fig, ax = _plot_curves(
        curves,
        class_names,
        lambda r: (r.fpr, r.tpr),
        lambda c, r: f"{class_names[c]} (AUC {r.auc:.3f}{_ci_text(ci, c)})",
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title("ROC, one-vs-rest")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_pr(
    curves: Mapping[int, PrCurve],
    class_names: Sequence[str],
    ci: Mapping[Any, tuple[float, float]] | None = None,
) -> Figure:
    """One-vs-rest precision-recall curves with average precision (and bootstrap CI when given) in the legend."""
    fig, ax = _plot_curves(
        curves,
        class_names,
        lambda r: (r.recall, r.precision),
        lambda c, r: f"{class_names[c]} (AP {r.average_precision:.3f}{_ci_text(ci, c)})",
        # Steps match how average precision sums the curve (no optimistic interpolation).
        drawstyle="steps-post",
    )
    ax.set_xlabel("Recall (sensitivity)")
    ax.set_ylabel("Precision (PPV)")
    ax.set_title("Precision-recall, one-vs-rest")
    ax.legend(loc="lower left", fontsize="small")
    return fig


def plot_reliability(calib: Mapping[str, Any]) -> Figure:
    """Reliability diagram (accuracy vs confidence per bin) over a confidence histogram."""
    edges = np.asarray(calib["bin_edges"], dtype=np.float64)
    accuracy = np.asarray(calib["accuracy"], dtype=np.float64)
    confidence = np.asarray(calib["confidence"], dtype=np.float64)
    count = np.asarray(calib["count"], dtype=np.float64)
    widths = np.diff(edges)
    fig = Figure(figsize=(5.5, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.bar(
        edges[:-1],
        np.nan_to_num(accuracy),
        widths,
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    # Gap bars run from accuracy to mean confidence: upward where the model is over-confident.
    top.bar(
        edges[:-1],
        np.nan_to_num(confidence - accuracy),
        widths,
        bottom=np.nan_to_num(accuracy),
        align="edge",
        fill=False,
        hatch="//",
        edgecolor="tab:red",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("Accuracy")
    top.set_title(f"Reliability (ECE = {calib['ece']:.3f})")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(edges[:-1], count, widths, align="edge", color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("Confidence (top-label probability)")
    bottom.set_ylabel("Images")
    return fig


def plot_threshold_scores(
    scores: np.ndarray, is_positive: np.ndarray, thresholds: Mapping[str, float]
) -> Figure:
    """Histograms of positive and negative scores with the chosen thresholds as vertical lines."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(is_positive).astype(bool)
    if s.ndim != 1 or pos.shape != s.shape:
        raise ValueError(
            f"scores and is_positive must be 1-D of one length, got {s.shape}, {pos.shape}"
        )
    bins = np.linspace(min(0.0, s.min()), max(1.0, s.max()), 41)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(s[~pos], bins=bins, alpha=0.6, color="tab:blue", label=f"negatives (n={(~pos).sum()})")
    ax.hist(s[pos], bins=bins, alpha=0.6, color="tab:red", label=f"positives (n={pos.sum()})")
    palette = colormaps["Dark2"].colors
    for i, (name, t) in enumerate(thresholds.items()):
        ax.axvline(t, color=palette[i % len(palette)], ls="--", lw=1.5, label=f"{name} = {t:.4g}")
    ax.set_xlabel("Score of the positive class")
    ax.set_ylabel("Images")
    ax.set_title("Scores and thresholds")
    ax.legend(fontsize="small")
    return fig


def eval_figures(split: str, probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Figure]:
    """Confusion matrix (counts and row-normalised) and one-vs-rest ROC of one split; multi-label
    targets ([N, L], NaN unknown) get each finding's ROC and PR curve instead."""
    from sklearn.metrics import confusion_matrix

    y, p = targets.numpy(), probs.numpy()
    if y.ndim == 2:
        rocs, prs = label_curves(y, p)
        return {f"{split}_roc.png": plot_roc(rocs, classes), f"{split}_pr.png": plot_pr(prs, classes)}
    cm = confusion_matrix(y, p.argmax(1), labels=list(range(len(classes))))
    return {
        f"{split}_confusion_matrix.png": plot_confusion_matrix(cm, classes),
        f"{split}_confusion_matrix_norm.png": plot_confusion_matrix(cm, classes, normalize=True),
        f"{split}_roc.png": plot_roc(roc_curves(y, p), classes),
    }
