"""The explanation part of an evaluation: the shortcut check that opens every report, and with
--explain heatmap galleries of TP/FP/FN (or correct/misclassified), average heatmaps,
eigen-heatmaps, AOPC and focus on the evaluated split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cxrlab.callbacks.explanations.display import heatmap_grid
from cxrlab.callbacks.explanations.explanation import ExplanationSet, target_layer
from cxrlab.callbacks.explanations.explanation_pass import (
    ExplainedImages,
    explain_image_set,
    sample_images,
)
from cxrlab.callbacks.explanations.methods import heatmaps, of_class
from cxrlab.callbacks.explanations.records import focus_table, shortcut_gallery
from cxrlab.callbacks.explanations.shortcut import CRITERIA
from cxrlab.config import Config
from cxrlab.experiments.evaluation.data import EvaluationData
from cxrlab.experiments.evaluation.outputs import Predictions
from cxrlab.experiments.evaluation.report import Section
from cxrlab.experiments.tracking.writer import write_objects

PER_CLASS = 50  # images per class that evaluate explains (the shortcut check and --explain)
FIGURES = ("averages.png", "argmax_map.png", "boxplots.png", "eigen_components.png", "aopc_curve.png")


def split_rows(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of the model's classes in one split (or all)."""
    return table[table["known"] & ((table["split"] == split) | (split == "all"))]


def case_rows(preds: Predictions, split: str, positive: str | None, per_case: int = 4, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Up to `per_case` rows of each outcome: TP/FP/FN for a positive class, else correct/misclassified."""
    rows = split_rows(preds.rows.assign(pred=[preds.classes[i] for i in preds.probs.argmax(1)]), split)
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


def _gallery(model: Any, rows: pd.DataFrame, cfg: Config, method: str) -> Any:
    """Overlays of each image's predicted-class heatmap at several alphas."""
    images = sample_images(model, rows, None, cfg.seed, cfg.data)
    pred = torch.tensor(rows["pred"].map({c: i for i, c in enumerate(model.classes)}).tolist())
    maps = of_class(heatmaps(model, target_layer(model, cfg.explain), images.images, method, settings=cfg.explain), pred)
    titles = [f"true {t}, predicted {p}" for t, p in zip(rows["label"], rows["pred"], strict=True)]
    return heatmap_grid(images.images[:, 0], maps, titles=titles, alphas=(0.3, 0.5, 0.7))


def explain_split(
    model: Any, data: EvaluationData, split: str, cfg: Config, focus_only: bool, per_class: int | None = PER_CLASS
) -> ExplainedImages:
    """The explanation pass over up to `per_class` images (all when None) of every model class in one
    split (or all)."""
    rows = split_rows(data.table, split)
    if rows.empty:
        raise ValueError(
            f"{data.where}: the {split} split has no images of the model's classes; choose --split val, test or all"
        )
    return explain_image_set(model, sample_images(model, rows, per_class, cfg.seed, cfg.data), cfg.explain, cfg.seed, focus_only)


def shortcut_report(es: ExplanationSet, split: str, cfg: Config, out: Path) -> Section:
    """The report's opening section: the verdict, the share of flagged images, the worst cases.
    Writes explain/focus.csv and explain/shortcut_cases.png."""
    verdict, alarm = es.verdict, cfg.explain.alarm
    folder = out / "explain"
    gallery = shortcut_gallery(es)
    files = {"focus.csv": focus_table(es)} | ({"shortcut_cases.png": gallery} if gallery is not None else {})
    write_objects(files, folder)
    rows = []
    for name, (key, at_least) in CRITERIA.items():
        if name in es.focus:
            values = es.focus[name]
            bound = getattr(alarm, key)
            broken = values < bound if at_least else values > bound
            defined = int((~values.isnan()).sum())
            rows.append({
                "focus": name, "threshold": f"{'<' if at_least else '>'} {bound:g}",
                "mean": float(values.nanmean()), "images flagged": int(broken.sum()),
                "share flagged": int(broken.sum()) / defined if defined else float("nan"),
            })
    text = [
        verdict.sentence(),
        f"{verdict.n_judged} images of the {split} split, {es.primary} heatmaps of the predicted class. "
        "Focus is the heatmap's mass share in a region over the region's area share (1 = uniform): "
        f"border = outer {cfg.explain.border_width:.0%} of each side, corners = four squares of "
        f"{cfg.explain.corner_size:.0%} of each side, outside the body = outside a body mask "
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
    preds: Predictions | None,
    done: ExplainedImages,
    split: str,
    positive: str | None,
    cfg: Config,
    out: Path,
) -> list[Section]:
    """Write explain/ into `out`; return the report section."""
    es, a = done.explanation, cfg.explain.aopc
    artifacts = done.artifacts()
    # Galleries by outcome need one predicted class per image: multi-label models (preds None) have none.
    for name, case in (case_rows(preds, split, positive, seed=cfg.seed) if preds is not None else {}).items():
        artifacts[f"cases_{name}.png"] = _gallery(model, case, cfg, es.primary)
    folder = out / "explain"
    write_objects(artifacts, folder)
    text = [f"{len(es.labels)} images of the {split} split ({PER_CLASS} per class at most), method {es.primary}."]
    tables = []
    if es.aopc is not None:
        text.append(
            f"AOPC (MoRF, {a.region} px regions, {a.steps} steps, {a.perturb} perturbation) over "
            f"{es.aopc['n_correct']} correctly classified images; random-order baseline over {a.random_seeds} seeds."
        )
        tables.append(pd.DataFrame([{k.removeprefix("explain/"): v for k, v in done.metrics.items() if "aopc" in k or "focus" in k}]))
    if es.eigen is not None:
        tables.append(es.eigen.avg_pc1_corr.reset_index(names="PC1 of class \\ average of"))
    shown = [f"cases_{n}.png" for n in ("true_positives", "false_positives", "false_negatives", "correct", "misclassified")]
    shown = [n for n in (*shown, *FIGURES) if n in artifacts]
    section = Section(
        "Explanations", text=text, tables=tables,
        figures=[folder / n for n in shown], images=[f"explain/{n}" for n in shown],
    )
    return [section]
