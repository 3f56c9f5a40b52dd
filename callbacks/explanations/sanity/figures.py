"""Figures of the sanity checks; each returns a matplotlib Figure and writes nothing."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from matplotlib.figure import Figure

from cxrlab.callbacks.explanations.display import minmax, upsample
from cxrlab.callbacks.explanations.plots import HEAT_CMAP, _show
from cxrlab.callbacks.explanations.sanity.check import MethodSanity


def plot_similarity_vs_depth(checks: Mapping[str, MethodSanity]) -> Figure:
    """Rank correlation and SSIM with the trained model's maps as the network is randomised from the head down."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    for name, check in checks.items():
        stages = [r.name.removeprefix("backbone.") for r in check.cascade]
        style = {"linestyle": "--", "color": "grey"} if check.control else {"marker": "o"}
        axes[0].plot(stages, [r.spearman for r in check.cascade], label=name, **style)
        axes[1].plot(stages, [r.ssim for r in check.cascade], label=name, **style)
    bound = next(iter(checks.values())).bound if checks else None
    if bound is not None:
        axes[0].axhline(bound, color="red", linewidth=0.8, label=f"bound {bound:g}")
    for ax, title in zip(axes, ("Spearman rank correlation", "SSIM"), strict=True):
        ax.set_title(f"{title} with the trained model's maps", fontsize=9)
        ax.set_xlabel("randomised down to (cascading)")
        ax.set_ylim(-0.5, 1.05)
        ax.tick_params(axis="x", rotation=45)
    axes[0].legend(fontsize=7)
    return fig


def plot_randomisation_grid(images: torch.Tensor, checks: Mapping[str, MethodSanity]) -> Figure:
    """One image's map per method (rows) for the trained model and after each cascading stage (columns)."""
    size = tuple(images.shape[-2:])
    columns = 1 + max(len(c.cascade) for c in checks.values())
    fig = Figure(figsize=(1.6 * (columns + 1), 1.6 * len(checks)), layout="constrained")
    axes = fig.subplots(len(checks), columns + 1, squeeze=False)
    for row, (name, check) in enumerate(checks.items()):
        _show(axes[row, 0], images[0, 0].numpy(), "image" if row == 0 else "", cmap="gray")
        axes[row, 0].set_ylabel(name, fontsize=8)
        maps = [check.maps[:1], *(r.maps[:1] for r in check.cascade)]
        titles = ["trained", *(f"-> {r.name.removeprefix('backbone.')}" for r in check.cascade)]
        for col, (m, title) in enumerate(zip(maps, titles, strict=True), start=1):
            shown = minmax(upsample(m.float(), size))[0].numpy()
            _show(axes[row, col], shown, title if row == 0 else "", cmap=HEAT_CMAP, vmin=0, vmax=1)
        for col in range(len(maps) + 1, columns + 1):
            axes[row, col].axis("off")
    return fig
