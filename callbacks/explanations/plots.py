"""Figures for eigen-heatmaps and AOPC; each returns a matplotlib Figure and writes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Patch

from cxrlab.callbacks.explanations.eigen import EigenResult, PCAResult, pearson, reconstruct

# Figure() without pyplot renders through Agg and never touches a GUI backend or global state
HEAT_CMAP = "jet"
SIGNED_CMAP = "RdBu_r"  # principal components carry signs: white is zero


def _show(ax: Axes, image: np.ndarray, title: str, **imshow_kw: object) -> AxesImage:
    """Draw one map without ticks under a title."""
    shown = ax.imshow(image, **imshow_kw)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return shown


def _limits(values: np.ndarray) -> tuple[float | None, float | None]:
    """Colour limits over the finite values (None, None when there are none)."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (None, None)


def _check_classes(n: int, class_names: Sequence[str], what: str) -> None:
    """Raise ValueError when the number of classes in what disagrees with class_names."""
    if n != len(class_names):
        raise ValueError(f"{what} has {n} classes but class_names has {len(class_names)}")


def plot_average_grid(averages: np.ndarray, class_names: Sequence[str]) -> Figure:
    """C x C average heatmaps: rows image class, columns heatmap class, one colour scale per column."""
    if averages.ndim != 4 or averages.shape[0] != averages.shape[1]:
        raise ValueError(f"averages must be [C, C, H, W], got shape {averages.shape}")
    n = averages.shape[0]
    _check_classes(n, class_names, "averages")
    fig = Figure(figsize=(2.2 * n + 1.5, 2.2 * n), layout="constrained")
    axes = fig.subplots(n, n, squeeze=False)
    for j, map_cls in enumerate(class_names):
        vmin, vmax = _limits(averages[:, j])
        for i, img_cls in enumerate(class_names):
            shown = _show(axes[i, j], averages[i, j], f"image {img_cls} / map {map_cls}",
                          cmap=HEAT_CMAP, vmin=vmin, vmax=vmax)
        fig.colorbar(shown, ax=axes[:, j], shrink=0.6)
    fig.suptitle("Average raw heatmaps (rows: image class, columns: heatmap class)")
    return fig


def plot_argmax_map(argmax_map: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Per-pixel winning class (the four-colour map) with a legend; -1 pixels stay blank."""
    if argmax_map.ndim != 2:
        raise ValueError(f"argmax_map must be [H, W], got shape {argmax_map.shape}")
    colours = [f"C{c % 10}" for c in range(len(class_names))]
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    _show(ax, np.ma.masked_less(argmax_map, 0), "Strongest normalised average heatmap",
          cmap=ListedColormap(colours), vmin=-0.5, vmax=len(class_names) - 0.5,
          interpolation="nearest")
    ax.legend(handles=[Patch(color=c, label=n) for c, n in zip(colours, class_names, strict=True)],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    return fig


def plot_boxplots(values_by_class: Mapping[str, np.ndarray], class_names: Sequence[str]) -> Figure:
    """Box plots of raw pixel values per class (classes without values show an empty box)."""
    data = [np.asarray(values_by_class.get(name, np.empty(0))).ravel() for name in class_names]
    fig = Figure(figsize=(1.2 * len(class_names) + 2, 4), layout="constrained")
    ax = fig.subplots()
    ax.boxplot(data, tick_labels=list(class_names), flierprops={"markersize": 1})
    ax.set_ylabel("raw heatmap value")
    ax.set_title("Pixel values of the class-average heatmaps")
    return fig


def plot_components(result: EigenResult, max_components: int = 5) -> Figure:
    """PC images per class (rows) with their explained variance in the titles."""
    if max_components < 1:
        raise ValueError(f"max_components must be >= 1, got {max_components}")
    n_cols = max([min(p.n_components, max_components) for p in result.pcas if p] or [1])
    n_rows = len(result.class_names)
    fig = Figure(figsize=(max(2.2 * n_cols, 4.5), 2.2 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for row, (name, pca) in enumerate(zip(result.class_names, result.pcas, strict=True)):
        shown = 0 if pca is None else min(pca.n_components, max_components)
        for k in range(shown):
            comp = pca.components[k]
            limit = float(np.abs(comp).max())
            ratio = 100 * pca.explained_variance_ratio[k]
            _show(axes[row, k], comp, f"{name} PC{k + 1} ({ratio:.1f} %)",
                  cmap=SIGNED_CMAP, vmin=-limit, vmax=limit)
        for k in range(shown, n_cols):
            axes[row, k].set_axis_off()
        if pca is None:
            axes[row, 0].text(0.5, 0.5, f"{name}: skipped\n(too few images)", ha="center",
                              va="center", transform=axes[row, 0].transAxes, fontsize=8)
    fig.suptitle("Eigen-heatmaps (uncentred PCA per class)")
    return fig


def plot_reconstructions(
    heatmap: np.ndarray, pca: PCAResult, ks: Sequence[int] = (1, 2, 5)
) -> Figure:
    """A heatmap next to its projections on the first k PCs (k capped at the kept components)."""
    used = list(dict.fromkeys(min(k, pca.n_components) for k in ks))
    fig = Figure(figsize=(2.4 * (len(used) + 1), 2.6), layout="constrained")
    axes = fig.subplots(1, len(used) + 1, squeeze=False)[0]
    vmin, vmax = _limits(np.asarray(heatmap))
    _show(axes[0], heatmap, "heatmap", cmap=HEAT_CMAP, vmin=vmin, vmax=vmax)
    for ax, k in zip(axes[1:], used, strict=True):
        rec = reconstruct(heatmap, pca, k)
        _show(ax, rec, f"k={k} (r={pearson(rec, np.asarray(heatmap)):.3f})", cmap=HEAT_CMAP,
              vmin=vmin, vmax=vmax)
    return fig


def plot_aopc_curve(curves: Mapping[str, np.ndarray]) -> Figure:
    """AOPC versus perturbation steps, one labelled line per curve (e.g. MoRF vs random)."""
    if not curves:
        raise ValueError("curves is empty; pass {label: AOPC curve} with at least one entry")
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    for label, curve in curves.items():
        values = np.asarray(curve, dtype=float)
        ax.plot(np.arange(len(values)), values, marker="o", markersize=3, label=label)
    ax.set_xlabel("perturbation steps L")
    ax.set_ylabel("AOPC$_L$")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
