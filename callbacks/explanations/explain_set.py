"""One explanation pass over a set of images, shared by the epoch-end callback, `cxrlab explain`
and `cxrlab evaluate` (its shortcut check, and all of it with --explain): heatmaps, eigen-heatmaps,
AOPC, focus (lung, lesion, border, corners, outside the body) and the shortcut verdict, and the
figures, tables and arrays that record them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from callbacks.explanations.aopc import aopc_with_baseline
from callbacks.explanations.display import heatmap_grid, upsample
from callbacks.explanations.eigen import EigenResult, compare, eigen_heatmaps
from callbacks.explanations.focus import mask_focus, region_focus
from callbacks.explanations.gradcam import activation_map, grad_cam, grad_cam_pp
from callbacks.explanations.plots import (
    plot_aopc_curve,
    plot_argmax_map,
    plot_average_grid,
    plot_boxplots,
    plot_components,
    plot_reconstructions,
)
from callbacks.explanations.shortcut import ShortcutVerdict, shortcut_verdict
from experiments.config import AlarmConfig

METHODS = {"gradcam": grad_cam, "gradcampp": grad_cam_pp}


def heatmaps(model: nn.Module, layer: str | nn.Module, images: torch.Tensor, method: str, batch_size: int = 32) -> torch.Tensor:
    """Raw maps [N, C, h, w] (all classes) for gradcam/gradcampp, [N, 1, h, w] for activation."""
    if method == "activation":
        return activation_map(model, layer, images, batch_size=batch_size)
    if method not in METHODS:
        raise ValueError(f"explain.methods: unknown method {method!r}; choose gradcam, gradcampp or activation")
    return METHODS[method](model, layer, images, batch_size=batch_size)


def of_class(maps: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The map of one class per image ([N, h, w]); class-agnostic maps pass through."""
    if maps.shape[1] == 1:
        return maps[:, 0]
    return maps[torch.arange(len(maps)), torch.as_tensor(classes, dtype=torch.long)]


def check_aopc_grid(image_size: int, region: int, steps: int) -> None:
    """Fail early, naming the keys, when the AOPC grid has fewer regions than steps."""
    per_side = -(-image_size // region)
    if steps > per_side**2:
        raise ValueError(
            f"explain.aopc.steps={steps} exceeds the {per_side**2} regions of {region} px on a "
            f"{image_size} px input; lower explain.aopc.steps or explain.aopc.region"
        )


@dataclass
class ExplanationSet:
    """The result of one explanation pass."""

    classes: list[str]
    images: torch.Tensor  # [N, 1, H, W] in [0, 1]
    labels: torch.Tensor  # [N] true class indices
    probs: torch.Tensor  # [N, K]
    maps: dict[str, torch.Tensor]  # method -> raw maps at layer resolution
    primary: str  # the method AOPC, focus and eigen-heatmaps use
    eigen: EigenResult | None
    aopc: dict[str, Any] | None
    focus: dict[str, torch.Tensor]  # lung_focus, lesion_focus (with masks), border_focus, ...: [N], NaN undefined
    verdict: ShortcutVerdict | None  # None when the alarm is disabled

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(1)


def explain_images(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    settings: dict[str, Any],
    layer: str | nn.Module | None = None,
    lung_masks: torch.Tensor | None = None,
    lesion_masks: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 32,
    focus_only: bool = False,
) -> ExplanationSet:
    """Run every configured explanation on images in [0, 1] (settings = the config's explain section);
    `focus_only` skips eigen-heatmaps and AOPC (what the shortcut check alone needs)."""
    layer = layer or settings.get("target_layer") or model.target_layer
    device = next(model.parameters()).device
    x = images.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = torch.cat([model(b).float().softmax(1) for b in x.split(batch_size)]).cpu()
    finally:
        model.train(was_training)
    maps = {m: heatmaps(model, layer, x, m, batch_size).cpu() for m in settings["methods"]}
    primary = settings["methods"][0]
    preds = probs.argmax(1)
    focus_maps = of_class(maps[primary], preds)

    eigen = None
    class_method = next((m for m in settings["methods"] if m != "activation"), None)
    if settings["eigen"] and class_method is not None and not focus_only:
        display = upsample(maps[class_method], settings["display_size"])
        eigen = eigen_heatmaps(display.numpy(), labels.numpy(), classes)

    aopc = None
    a = settings["aopc"]
    if (preds == labels).any() and not focus_only:
        aopc = aopc_with_baseline(
            model, x, labels.to(device), focus_maps.to(device), region=a["region"], steps=a["steps"],
            perturb=a["perturb"], sigma=a["sigma"], seed=seed, batch_size=batch_size * 2,
            random_seeds=a["random_seeds"],
        )
    focus = {
        name: mask_focus(focus_maps, masks)
        for name, masks in (("lung_focus", lung_masks), ("lesion_focus", lesion_masks)) if masks is not None
    }
    focus |= region_focus(focus_maps, images.cpu(), settings["border_width"], settings["corner_size"])
    alarm = AlarmConfig(**settings["alarm"])
    verdict = shortcut_verdict(focus, alarm) if alarm.enabled else None
    return ExplanationSet(classes, images.cpu(), labels.cpu(), probs, maps, primary, eigen, aopc, focus, verdict)


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
            f"true {es.classes[es.labels[i]]} / pred {es.classes[preds[i]]} ({es.probs[i, preds[i]]:.2f})" for i in rows
        ]
        for method, maps in es.maps.items():
            out[f"heatmaps_{method}.png"] = heatmap_grid(
                es.images[rows, 0], of_class(maps[rows], preds[rows]), titles=titles, alphas=alphas,
                masks=None if masks is None else masks[rows],
            )
    if es.eigen is not None:
        e = es.eigen
        out["averages.png"] = plot_average_grid(e.averages, es.classes)
        out["argmax_map.png"] = plot_argmax_map(e.argmax_map, es.classes)
        out["boxplots.png"] = plot_boxplots(e.box_values, es.classes)
        out["eigen_components.png"] = plot_components(e)
        out["eigen_variance.csv"] = e.variance_table
        out["avg_pc1_corr.csv"] = e.avg_pc1_corr.reset_index(names="pc1_of_class")
        c = next((c for c, p in enumerate(e.pcas) if p is not None), None)
        if c is not None:
            first = int(torch.nonzero(es.labels == c).flatten()[0])
            display = upsample(es.maps[_class_method(es)][first, c], e.averages.shape[-1]).numpy()
            out["eigen_reconstructions.png"] = plot_reconstructions(display, e.pcas[c])
    if es.aopc is not None:
        out["aopc_curve.png"] = plot_aopc_curve({"MoRF": es.aopc["curve_morf"], "random order": es.aopc["curve_random"]})
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
    """Overlays of the `n` images whose heatmaps break the alarm's thresholds worst (None if none)."""
    if es.verdict is None or not es.verdict.n_judged:
        return None
    severity = es.verdict.severity.nan_to_num(nan=-1.0)
    order = severity.argsort(descending=True)[: min(n, es.verdict.n_judged)]
    preds = es.preds
    titles = [
        f"{es.classes[es.labels[i]]}->{es.classes[preds[i]]}\n{es.verdict.reason[i].removesuffix('_focus')} "
        f"{es.focus[es.verdict.reason[i]][i]:.2f} ({_times(float(severity[i]))})"
        for i in order.tolist()
    ]
    return heatmap_grid(es.images[order, 0], of_class(es.maps[es.primary][order], preds[order]), titles=titles, alphas=(0.5,))


def _times(severity: float) -> str:
    """How far a bound is broken, for a title: a zero lung focus breaks it infinitely far."""
    return f"x{severity:.1f}" if severity < 100 else "x>100"


def _class_method(es: ExplanationSet) -> str:
    return next(m for m in es.maps if m != "activation")


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


def load_heatmap_archive(data: bytes | str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(heatmaps [N, C, h, w], labels [N], classes) from a heatmaps.npz written above."""
    with np.load(io.BytesIO(data) if isinstance(data, bytes) else data) as z:
        return z["heatmaps"], z["labels"], [str(c) for c in z["classes"]]


def robustness(a: tuple[np.ndarray, np.ndarray, list[str]], b: tuple[np.ndarray, np.ndarray, list[str]], display_size: int = 224) -> pd.DataFrame:
    """Correlations of class averages and PC1s between two heatmap sets (the robustness study)."""
    (ha, la, ca), (hb, lb, cb) = a, b
    if ca != cb:
        raise ValueError(f"heatmap sets have different classes: {ca} vs {cb}")
    ea = eigen_heatmaps(upsample(torch.from_numpy(ha), display_size).numpy(), la, ca)
    eb = eigen_heatmaps(upsample(torch.from_numpy(hb), display_size).numpy(), lb, cb)
    return compare(ea, eb)
