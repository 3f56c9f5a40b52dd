"""`cxrlab explain sanity` and the sanity section of `cxrlab evaluate --explain`: every sanity check
of the configured heatmap methods on a split of a checkpoint's data, written as sanity.json,
sanity.csv, the similarity-vs-depth plot and the randomisation grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from cxrlab.callbacks.explanations.explanation_pass import sample_images
from cxrlab.callbacks.explanations.sanity.check import MethodSanity, checked_methods, sanity_checks
from cxrlab.callbacks.explanations.sanity.figures import (
    plot_randomisation_grid,
    plot_similarity_vs_depth,
)
from cxrlab.config import Config
from cxrlab.experiments.evaluation.data import EvaluationData
from cxrlab.experiments.evaluation.explain_report import split_rows
from cxrlab.experiments.evaluation.report import Section
from cxrlab.experiments.tracking.writer import write_objects

FOLDER = "sanity"
FIGURES = ("sanity_similarity.png", "sanity_randomisation.png")


def run_sanity(model: Any, data: EvaluationData, split: str, cfg: Config, per_class: int | None,
               progress: bool = True) -> tuple[dict[str, MethodSanity], Any]:
    """The checks on up to `per_class` images per class of `split` (explain.sanity.per_class when None)."""
    rows = split_rows(data.table, split)
    if rows.empty:
        raise ValueError(
            f"{data.where}: the {split} split has no images of the model's classes; choose --split val, test or all"
        )
    images = sample_images(model, rows, per_class or cfg.explain.sanity.per_class, cfg.seed, cfg.data)
    with tqdm(total=len(checked_methods(cfg.explain)), desc="sanity checks", unit="method", disable=not progress) as bar:
        def step(method: str) -> None:
            bar.set_postfix_str(f"{method} done")
            bar.update(1)

        checks = sanity_checks(model, images.images, cfg.explain, images.lesion_masks, cfg.seed, progress=step,
                               labels=images.labels)
    return checks, images


def masks_note(checks: dict[str, MethodSanity]) -> str | None:
    """Why the localisation columns are empty, when they are."""
    if any(c.pointing_game is not None for c in checks.values()):
        return None
    return ("pointing game and relevance rank accuracy skipped: the data has no lesion masks "
            "(a lesion_path column, or the phantom's lesions/ folder)")


def sanity_table(checks: dict[str, MethodSanity]) -> pd.DataFrame:
    """One row per method: randomisation verdict, lowest similarity in the top half, ROAD, deletion,
    insertion, localisation and time per image (sanity.csv)."""
    rows = []
    for name, c in checks.items():
        half = c.cascade[: (len(c.cascade) + 1) // 2]
        rows.append({
            "method": name,
            "randomisation": "pass" if c.passes else "FAIL",
            "min_spearman_top_half": min(r.spearman for r in half),
            "spearman_all_randomised": c.cascade[-1].spearman,
            "ssim_all_randomised": c.cascade[-1].ssim,
            "road_gap": c.road.gap,
            "deletion_auc": c.curves.deletion_auc,
            "insertion_auc": c.curves.insertion_auc,
            "pointing_game": c.pointing_game,
            "relevance_rank_accuracy": c.rank_accuracy,
            "seconds_per_image": c.seconds_per_image,
            "control": c.control,
        })
    return pd.DataFrame(rows)


def sanity_metrics(checks: dict[str, MethodSanity], prefix: str = "sanity/") -> dict[str, float]:
    """The table's numbers as MLflow metrics: sanity/<method>/<check>."""
    out = {}
    for row in sanity_table(checks).to_dict("records"):
        method = row.pop("method")
        row["passes"] = float(row.pop("randomisation") == "pass")
        row.pop("control")
        out |= {f"{prefix}{method}/{k}": float(v) for k, v in row.items() if v is not None and pd.notna(v)}
    return out


def write_sanity(checks: dict[str, MethodSanity], images: Any, folder: Path) -> list[Path]:
    """sanity.json, sanity.csv and the two figures into `folder`."""
    numbers = {name: c.numbers() for name, c in checks.items()}
    return write_objects({
        "sanity.json": json.dumps(numbers, indent=2),
        "sanity.csv": sanity_table(checks),
        FIGURES[0]: plot_similarity_vs_depth(checks),
        FIGURES[1]: plot_randomisation_grid(images.images, checks),
    }, folder)


def sanity_section(checks: dict[str, MethodSanity], images: Any, split: str, cfg: Config, out: Path) -> Section:
    """Write sanity/ into `out`; return the report's sanity section: a verdict line per method, the
    table and the figures."""
    folder = out / FOLDER
    write_sanity(checks, images, folder)
    s = cfg.explain.sanity
    text = [
        f"Sanity checks on the {split} split, maps of the predicted class. Model randomisation "
        f"(Adebayo et al. 2018): the network is re-initialised from the head down; a method passes when "
        f"its maps' rank correlation with the trained model's falls below {s.bound:g} by the time the top "
        "half is randomised. The edge control ignores the model and must fail. ROAD gap (Rong et al. 2022) "
        "= LeRF - MoRF with removed regions imputed from their neighbours (higher is better); deletion AUC "
        "lower and insertion AUC higher is better (Petsiuk et al. 2018); the pointing game is over images "
        "with a lesion mask.",
        *(c.verdict() for c in checks.values()),
        *filter(None, [masks_note(checks)]),
    ]
    return Section(
        "Sanity checks of the heatmaps", text=text, tables=[sanity_table(checks)],
        figures=[folder / n for n in FIGURES], images=[f"{FOLDER}/{n}" for n in FIGURES],
    )
