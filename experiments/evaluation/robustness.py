"""Heatmap robustness between two heatmap sets (original vs new images, or model 1 vs model 2): the
one implementation behind `cxrlab explain compare A B` and its alias `cxrlab compare --heatmaps`."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pandas as pd

from cxrlab.callbacks.explanations.eigen import HeatmapSet, robustness
from cxrlab.callbacks.explanations.records import load_heatmap_archive
from cxrlab.experiments.evaluation.report import markdown_table
from cxrlab.experiments.tracking import store

HEATMAP_SET = re.compile(r"^explain/([^/]+)/heatmaps\.npz$")


def heatmap_set(ref: str, uri: str | None = None) -> HeatmapSet:
    """A heatmap set from a heatmaps.npz file, a folder holding one, or an MLflow run id (its last
    logged explain/*/heatmaps.npz)."""
    path = Path(ref)
    if path.is_file():
        return load_heatmap_archive(str(path))
    if (path / "heatmaps.npz").is_file():
        return load_heatmap_archive(str(path / "heatmaps.npz"))
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(store.resolve_uri(uri))
    ref = store.resolve_run_id(client, ref)
    try:
        client.get_run(ref)
    except MlflowException:
        raise ValueError(f"{ref}: neither a heatmaps.npz, a folder with one, nor an MLflow run id") from None
    found = sorted(
        a.path for d in client.list_artifacts(ref, "explain") if d.is_dir
        for a in client.list_artifacts(ref, d.path) if HEATMAP_SET.match(a.path)
    )
    if not found:
        raise ValueError(f"run {ref} has no explain/*/heatmaps.npz; train with explain.enabled or run cxrlab explain")
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(ref, found[-1], tmp)
        return load_heatmap_archive(local)


def heatmap_robustness(a: str, b: str, uri: str | None = None, display_size: int = 224) -> pd.DataFrame:
    """Correlations of the class averages and PC1 eigen-heatmaps of two heatmap sets."""
    return robustness(heatmap_set(a, uri), heatmap_set(b, uri), display_size)


def write_robustness(table: pd.DataFrame, out: str | Path, a: str, b: str) -> list[Path]:
    """heatmap_robustness.csv and .md in `out`; returns the two paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "heatmap_robustness.csv", out / "heatmap_robustness.md"]
    table.to_csv(files[0], index=False)
    files[1].write_text(
        "# Heatmap robustness\n\nPearson correlation of average heatmaps (every image class x heatmap "
        f"class) and of the first eigen-heatmaps (diagonal) between the heatmap sets {a} and {b} (a run "
        f"stands for its last logged set).\n\n{markdown_table(table)}\n"
    )
    return files


def robustness_summary(table: pd.DataFrame) -> str:
    """One line: the mean same-class correlation of the averages and of the PC1s."""
    same = table[table["image_class"] == table["heatmap_class"]]
    return (
        f"mean average-heatmap correlation (same class): {same['average_corr'].mean():.3f}; "
        f"mean PC1 correlation: {same['pc1_corr'].mean():.3f}"
    )
