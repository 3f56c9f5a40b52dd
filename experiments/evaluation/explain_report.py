"""The explanation part of an evaluation: the shortcut check that opens every report, and with
--explain heatmap galleries of TP/FP/FN (or correct/misclassified), average heatmaps,
eigen-heatmaps, AOPC and focus on the evaluated split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from callbacks.explanations.display import heatmap_grid
from callbacks.explanations.explain_set import (
    ExplanationSet,
    explain_images,
    explanation_artifacts,
    focus_table,
    heatmaps,
    of_class,
    shortcut_gallery,
)
from callbacks.explanations.shortcut import CRITERIA
from datamodules.images import Decoding
from datamodules.probe import load_image_set, stratified_sample
from experiments.evaluation.outputs import Predictions
from experiments.evaluation.report import Section
from experiments.tracking import store as tracking

PER_CLASS = 50  # images per class that evaluate explains (the shortcut check and --explain)
FIGURES = ("averages.png", "argmax_map.png", "boxplots.png", "eigen_components.png", "aopc_curve.png")


def case_rows(preds: Predictions, split: str, positive: str | None, per_case: int = 4, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Up to `per_case` rows of each outcome: TP/FP/FN for a positive class, else correct/misclassified."""
    rows = preds.rows.assign(pred=[preds.classes[i] for i in preds.probs.argmax(1)])
    rows = rows[rows["known"] & ((rows["split"] == split) | (split == "all"))]
    truth, pred = rows["label"], rows["pred"]
    if positive:
        cases = {
            "true_positives": (truth == positive) & (pred == positive),
            "false_positives": (truth != positive) & (pred == positive),
            "false_negatives": (truth == positive) & (pred != positive),
        }
    else:
        cases = {"correct": truth == pred, "misclassified": truth != pred}
    return {
        name: rows[mask].sample(n=min(per_case, int(mask.sum())), random_state=seed)
        for name, mask in cases.items() if mask.any()
    }


def _gallery(model: Any, rows: pd.DataFrame, classes: list[str], cfg: dict[str, Any], method: str) -> Any:
    """Overlays of each image's predicted-class heatmap at several alphas."""
    images = load_image_set(
        rows, classes, model.input_size, cfg["data"]["crop_margin"], Decoding.from_data(cfg["data"])
    )
    layer = cfg["explain"].get("target_layer") or model.target_layer
    pred = torch.tensor(rows["pred"].map({c: i for i, c in enumerate(classes)}).tolist())
    maps = of_class(heatmaps(model, layer, images.images, method), pred)
    titles = [f"{t} -> {p}" for t, p in zip(rows["label"], rows["pred"], strict=True)]
    return heatmap_grid(images.images[:, 0], maps, titles=titles, alphas=(0.3, 0.5, 0.7))


def explain_split(
    model: Any, data_table: pd.DataFrame, split: str, cfg: dict[str, Any], focus_only: bool, per_class: int = PER_CLASS
) -> ExplanationSet:
    """The shared explanation pass over up to `per_class` images of every class of one split."""
    rows = data_table[data_table["known"] & ((data_table["split"] == split) | (split == "all"))]
    sample = load_image_set(
        stratified_sample(rows, per_class, cfg["seed"]), model.classes, model.input_size, cfg["data"]["crop_margin"],
        Decoding.from_data(cfg["data"]),
    )
    return explain_images(
        model, sample.images, sample.labels, model.classes, cfg["explain"],
        lung_masks=sample.lung_masks, lesion_masks=sample.lesion_masks, seed=cfg["seed"], focus_only=focus_only,
    )


def shortcut_report(es: ExplanationSet, split: str, cfg: dict[str, Any], out: Path) -> Section:
    """The report's opening section: the verdict, the share of flagged images, the worst cases.
    Writes explain/focus.csv and explain/shortcut_cases.png."""
    verdict, alarm = es.verdict, cfg["explain"]["alarm"]
    folder = out / "explain"
    gallery = shortcut_gallery(es)
    files = {"focus.csv": focus_table(es)} | ({"shortcut_cases.png": gallery} if gallery is not None else {})
    tracking.write_objects(files, folder)
    rows = []
    for name, (key, at_least) in CRITERIA.items():
        if name in es.focus:
            values = es.focus[name]
            broken = values < alarm[key] if at_least else values > alarm[key]
            defined = int((~values.isnan()).sum())
            rows.append({
                "focus": name, "threshold": f"{'<' if at_least else '>'} {alarm[key]:g}",
                "mean": float(values.nanmean()), "images flagged": int(broken.sum()),
                "share flagged": int(broken.sum()) / defined if defined else float("nan"),
            })
    text = [
        verdict.sentence(),
        f"{verdict.n_judged} images of the {split} split, {es.primary} heatmaps of the predicted class. "
        "Focus is the heatmap's mass share in a region over the region's area share (1 = uniform): "
        f"border = outer {cfg['explain']['border_width']:.0%} of each side, corners = four squares of "
        f"{cfg['explain']['corner_size']:.0%} of each side, outside the body = outside a body mask "
        "computed from the image. An image is flagged when any score breaks its threshold "
        "(explain.alarm.*); the worst cases follow, ranked by how far they break it.",
    ]
    shown = ["shortcut_cases.png"] if gallery is not None else []
    return Section(
        "Shortcut check", text=text, tables=[pd.DataFrame(rows)],
        figures=[folder / n for n in shown], images=[f"explain/{n}" for n in shown],
    )


def explain_report(
    model: Any,
    preds: Predictions,
    es: ExplanationSet,
    split: str,
    positive: str | None,
    cfg: dict[str, Any],
    out: Path,
    metrics: dict[str, float],
) -> list[Section]:
    """Write explain/ into `out`; return the report section (`metrics`: the explain/* metrics of `es`)."""
    settings = cfg["explain"]
    artifacts = explanation_artifacts(es)
    for name, case in case_rows(preds, split, positive, seed=cfg["seed"]).items():
        artifacts[f"cases_{name}.png"] = _gallery(model, case, model.classes, cfg, es.primary)
    folder = out / "explain"
    tracking.write_objects(artifacts, folder)
    text = [f"{len(es.labels)} images of the {split} split ({PER_CLASS} per class at most), method {es.primary}."]
    tables = []
    if es.aopc is not None:
        a = settings["aopc"]
        text.append(
            f"AOPC (MoRF, {a['region']} px regions, {a['steps']} steps, {a['perturb']} perturbation) over "
            f"{es.aopc['n_correct']} correctly classified images; random-order baseline over {a['random_seeds']} seeds."
        )
        tables.append(pd.DataFrame([{k.removeprefix("explain/"): v for k, v in metrics.items() if "aopc" in k or "focus" in k}]))
    if es.eigen is not None:
        tables.append(es.eigen.avg_pc1_corr.reset_index(names="PC1 of class \\ average of"))
    shown = [f"cases_{n}.png" for n in ("true_positives", "false_positives", "false_negatives", "correct", "misclassified")]
    shown = [n for n in (*shown, *FIGURES) if n in artifacts]
    section = Section(
        "Explanations", text=text, tables=tables,
        figures=[folder / n for n in shown], images=[f"explain/{n}" for n in shown],
    )
    return [section]
