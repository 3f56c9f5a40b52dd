"""Evaluation figures: types, axes and the numbers they show."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from samples import NAMES, PNG_MAGIC
from samples import P_SMALL as P
from samples import Y_SMALL as Y

from cxrlab.experiments.evaluation.clinical import calibration, pr_curves, roc_curves
from cxrlab.experiments.evaluation.figures import (
    plot_confusion_matrix,
    plot_pr,
    plot_reliability,
    plot_roc,
    plot_threshold_scores,
)
from cxrlab.experiments.evaluation.report import figure_png

CM = [[2, 1, 0], [0, 2, 1], [1, 0, 3]]


def legend_texts(fig: Figure) -> list[str]:
    """Legend labels of the first axes."""
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_confusion_matrix_counts_and_normalised() -> None:
    fig = plot_confusion_matrix(CM, NAMES)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # matrix + colourbar
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["2", "1", "0", "0", "2", "1", "1", "0", "3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert ax.get_xlabel() == "Predicted" and ax.get_ylabel() == "True"
    norm = plot_confusion_matrix(np.array(CM), NAMES, normalize=True).axes[0]
    assert [t.get_text() for t in norm.texts[:3]] == ["0.67", "0.33", "0.00"]
    assert norm.get_images()[0].get_array()[2, 2] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(CM, NAMES[:2])


def test_roc_legend_has_auc_and_ci() -> None:
    curves = roc_curves(Y, P)
    ci = {0: (0.61, 0.99), 1: (float("nan"), float("nan")), 2: (0.5, 0.9)}
    fig = plot_roc(curves, NAMES, ci=ci)
    assert len(fig.axes) == 1
    assert len(fig.axes[0].lines) == 4  # three classes + chance diagonal
    labels = legend_texts(fig)
    assert labels[0] == f"normal (AUC {curves[0].auc:.3f} [0.610–0.990])"
    assert labels[1] == f"covid (AUC {curves[1].auc:.3f})"
    assert labels[3] == "chance"
    np.testing.assert_array_equal(fig.axes[0].lines[2].get_xdata(), curves[2].fpr)


def test_pr_legend_has_average_precision() -> None:
    curves = pr_curves(Y, P)
    fig = plot_pr(curves, NAMES)
    assert len(fig.axes[0].lines) == 3
    assert legend_texts(fig)[2] == f"pneumonia (AP {curves[2].average_precision:.3f})"
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), curves[0].precision)
    with pytest.raises(ValueError, match="class_names"):
        plot_pr(curves, NAMES[:1])


def test_reliability_diagram() -> None:
    cal = calibration(Y, P, n_bins=5)
    fig = plot_reliability(cal)
    top, bottom = fig.axes
    assert top.get_title() == f"Reliability (ECE = {cal['ece']:.3f})"
    heights = [b.get_height() for b in bottom.patches]
    assert heights == cal["count"]
    assert [b.get_height() for b in top.patches[:5]] == pytest.approx(
        np.nan_to_num(cal["accuracy"])
    )


def test_threshold_scores_lines_and_histograms() -> None:
    scores, pos = P[:, 1], Y == 1
    fig = plot_threshold_scores(scores, pos, {"zero-FN": 0.4, "Youden": 0.5})
    ax = fig.axes[0]
    assert [line.get_xdata()[0] for line in ax.lines] == [0.4, 0.5]
    labels = legend_texts(fig)
    assert "zero-FN = 0.4" in labels and "positives (n=3)" in labels
    # Both histograms together hold every image.
    assert sum(p.get_height() for p in ax.patches) == len(scores)


def test_figures_render_to_png() -> None:
    png = figure_png(plot_roc(roc_curves(Y, P), NAMES))
    assert png[:8] == PNG_MAGIC and len(png) > 5000
