"""What records an explanation pass: the scalar metrics, and the figures, tables and heatmap archive
written as artifacts (to MLflow or a folder)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrlab.callbacks.explanations import plots
from cxrlab.callbacks.explanations.display import heatmap_grid, upsample
from cxrlab.callbacks.explanations.eigen import HeatmapSet
from cxrlab.callbacks.explanations.explanation import ExplanationSet
from cxrlab.callbacks.explanations.methods import first_per_class, of_class


def _nanmean(t: torch.Tensor | None) -> float | None:
    if t is None or not torch.isfinite(t).any():
        return None
    return float(t[torch.isfinite(t)].mean())


def explanation_metrics(es: ExplanationSet, prefix: str = "explain/") -> dict[str, float]:
    """The scalar summary: AOPC (+ random baseline, gap), focus, PC1 variance, average-vs-PC1 r."""
    out: dict[str, float] = {}
    if es.aopc is not None:
        for key in ("aopc", "aopc_random", "aopc_gap"):
            out[prefix + key] = float(es.aopc[key])
        out[prefix + "aopc_n_correct"] = float(es.aopc["n_correct"])
    for name, values in es.focus.items():
        value = _nanmean(values)
        if value is not None:
            out[prefix + name] = value
    out |= {prefix + name: value for name, value in es.sanity.items()}
    if es.verdict is not None and es.verdict.n_judged:
        out[prefix + "shortcut_share"] = es.verdict.share
        out[prefix + "shortcut_alarm"] = float(es.verdict.alarm)
    if es.eigen is not None:
        corr = es.eigen.avg_pc1_corr.to_numpy()
        for c, name in enumerate(es.classes):
            if np.isfinite(es.eigen.pc1_var[c]):
                out[f"{prefix}pc1_var/{name}"] = float(es.eigen.pc1_var[c])
                out[f"{prefix}avg_pc1_corr/{name}"] = float(corr[c, c])
    return out


def _grid_rows(es: ExplanationSet, per_class: int = 2) -> torch.Tensor:
    """A few images of every true class, for the heatmap grid."""
    picks = [torch.nonzero(es.labels == c).flatten()[:per_class] for c in range(len(es.classes))]
    return torch.cat(picks) if picks else torch.arange(0)


def explanation_artifacts(
    es: ExplanationSet, alphas: tuple[float, ...] = (0.3, 0.5, 0.7), masks: torch.Tensor | None = None
) -> dict[str, Any]:
    """Artifact file name -> Figure | DataFrame | bytes, for MLflow or a folder."""
    out: dict[str, Any] = {}
    rows = _grid_rows(es)
    preds = es.preds
    if len(rows):
        titles = [
            f"true {es.classes[es.labels[i]]}, predicted {es.classes[preds[i]]} (p {es.probs[i, preds[i]]:.2f})" for i in rows
        ]
        for method, maps in es.maps.items():
            out[f"heatmaps_{method}.png"] = heatmap_grid(
                es.images[rows, 0], of_class(maps[rows], preds[rows]), titles=titles, alphas=alphas,
                masks=None if masks is None else masks[rows],
            )
    if es.eigen is not None:
        e = es.eigen
        out["averages.png"] = plots.plot_average_grid(e.averages, es.classes)
        out["argmax_map.png"] = plots.plot_argmax_map(e.argmax_map, es.classes)
        out["boxplots.png"] = plots.plot_boxplots(e.box_values, es.classes)
        out["eigen_components.png"] = plots.plot_components(e)
        out["eigen_variance.csv"] = e.variance_table
        out["avg_pc1_corr.csv"] = e.avg_pc1_corr.reset_index(names="pc1_of_class")
        c = next((c for c, p in enumerate(e.pcas) if p is not None), None)
        if c is not None:
            first = int(torch.nonzero(es.labels == c).flatten()[0])
            display = upsample(es.maps[first_per_class(list(es.maps))][first, c], e.averages.shape[-1]).numpy()
            out["eigen_reconstructions.png"] = plots.plot_reconstructions(display, e.pcas[c])
    if es.aopc is not None:
        out["aopc_curve.png"] = plots.plot_aopc_curve({"MoRF": es.aopc["curve_morf"], "random order": es.aopc["curve_random"]})
        out["aopc_curve.csv"] = pd.DataFrame(
            {"steps": np.arange(len(es.aopc["curve_morf"])), "aopc_morf": es.aopc["curve_morf"], "aopc_random": es.aopc["curve_random"]}
        )
    gallery = shortcut_gallery(es)
    if gallery is not None:
        out["shortcut_cases.png"] = gallery
    out["focus.csv"] = focus_table(es)
    out["heatmaps.npz"] = heatmap_archive(es)
    return out


def shortcut_gallery(es: ExplanationSet, n: int = 8) -> Any:
    """Overlays of the `n` images nearest to breaking, or furthest past, the alarm's thresholds
    (None if none was judged), the flagged ones marked, each captioned in words."""
    if es.verdict is None or not es.verdict.n_judged:
        return None
    severity = es.verdict.severity.nan_to_num(nan=-1.0)
    order = severity.argsort(descending=True)[: min(n, es.verdict.n_judged)].tolist()
    preds = es.preds
    titles = [
        f"true {es.classes[es.labels[i]]}, predicted {es.classes[preds[i]]}\n{focus_words(es.verdict.reason[i], float(es.focus[es.verdict.reason[i]][i]))}"
        for i in order
    ]
    return heatmap_grid(
        es.images[order, 0], of_class(es.maps[es.primary][order], preds[order]), titles=titles, alphas=(0.5,),
        flagged=[bool(severity[i] > 1) for i in order],
    )


def focus_words(name: str, value: float) -> str:
    """`lung focus 0.27: 27 % of a uniform map's share` (1.0 = the region's share of the area)."""
    return f"{name.replace('_', ' ')} {value:.2f}: {value:.0%} of a uniform map's share"


def focus_table(es: ExplanationSet) -> pd.DataFrame:
    """Per image: true and predicted class, confidence, every focus score and the shortcut flags."""
    preds = es.preds
    table = pd.DataFrame(
        {
            "true": [es.classes[i] for i in es.labels],
            "pred": [es.classes[i] for i in preds],
            "confidence": es.probs[torch.arange(len(preds)), preds].numpy(),
        }
    )
    for name, values in es.focus.items():
        table[name] = values.numpy()
    if es.verdict is not None:
        table["shortcut_severity"] = es.verdict.severity.numpy()
        table["shortcut_flagged"] = (es.verdict.severity > 1).numpy()
        table["shortcut_reason"] = es.verdict.reason
    return table


def heatmap_archive(es: ExplanationSet) -> bytes:
    """Raw heatmaps with labels and predictions as a compressed .npz (for robustness studies)."""
    buf = io.BytesIO()
    arrays = {f"heatmaps_{m}": v.numpy() for m, v in es.maps.items()}
    np.savez_compressed(
        buf, heatmaps=es.maps[es.primary].numpy(), labels=es.labels.numpy(), probs=es.probs.numpy(),
        classes=np.array(es.classes), **arrays,
    )
    return buf.getvalue()


def load_heatmap_archive(data: bytes | str) -> HeatmapSet:
    """(heatmaps [N, C, h, w], labels [N], classes) from a heatmaps.npz written above."""
    with np.load(io.BytesIO(data) if isinstance(data, bytes) else data) as z:
        return z["heatmaps"], z["labels"], [str(c) for c in z["classes"]]
