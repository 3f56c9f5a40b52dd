"""Tests for cxrlab.callbacks.explanations.plots: every figure builds on small inputs with the expected axes."""

import io
import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure

from cxrlab.callbacks.explanations.eigen import eigen_heatmaps
from cxrlab.callbacks.explanations.plots import (
    plot_aopc_curve,
    plot_argmax_map,
    plot_average_grid,
    plot_boxplots,
    plot_components,
    plot_reconstructions,
)

NAMES = ["normal", "covid", "pneumonia"]


@pytest.fixture(scope="module")
def result():
    """Eigen-heatmaps of 3 classes on 12x12 maps; the last class has one image (skipped)."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 8 + [1] * 6 + [2])
    maps = rng.random((len(labels), 3, 12, 12)) ** 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return eigen_heatmaps(maps, labels, NAMES, var_threshold=0.9)


def rendered(fig: Figure) -> Figure:
    """Draw the figure to PNG in memory so layout and colour mapping really run."""
    fig.savefig(io.BytesIO(), format="png")
    return fig


def test_average_grid_has_cells_and_column_colorbars(result):
    fig = rendered(plot_average_grid(result.averages, NAMES))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 3 + 3
    # one colour scale per column: both images of column 0 share limits
    col0 = [fig.axes[i * 3].images[0].get_clim() for i in range(2)]
    assert col0[0] == col0[1]
    with pytest.raises(ValueError, match="class_names has 2"):
        plot_average_grid(result.averages, NAMES[:2])


def test_argmax_map_has_legend_per_class(result):
    fig = rendered(plot_argmax_map(result.argmax_map, NAMES))
    assert len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == NAMES


def test_boxplots_one_box_per_class(result):
    fig = rendered(plot_boxplots(result.box_values, NAMES))
    assert len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == NAMES


def test_components_grid(result):
    fig = rendered(plot_components(result, max_components=2))
    n_cols = min(2, max(p.n_components for p in result.pcas if p is not None))
    assert len(fig.axes) == 3 * n_cols
    assert "PC1" in fig.axes[0].get_title() and "%" in fig.axes[0].get_title()
    assert not fig.axes[2 * n_cols].axison  # the skipped class shows a note, no image


def test_reconstructions_cap_k(result):
    pca = result.pcas[0]
    fig = rendered(plot_reconstructions(result.averages[0, 0], pca, ks=(1, 2, 10_000)))
    assert len(fig.axes) == 4
    assert fig.axes[-1].get_title().startswith(f"k={pca.n_components} ")


def test_aopc_curve_lines():
    curves = {"morf": np.linspace(0, 0.5, 11), "random": np.linspace(0, 0.1, 11)}
    fig = rendered(plot_aopc_curve(curves))
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 2
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_xdata(), np.arange(11))
    with pytest.raises(ValueError, match="curves is empty"):
        plot_aopc_curve({})
