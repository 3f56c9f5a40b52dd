"""What a model is trained to output for each row: a class index, or one 1/0/masked value per finding."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cxrlab.config import DataConfig
from cxrlab.datamodules.sources.findings import (
    UNCERTAIN,
    finding_column,
    finding_names,
    is_multilabel,
)

# What an uncertain label becomes under each data.uncertain policy (NaN: masked out of the loss).
UNCERTAIN_VALUE = {"ignore": np.nan, "ones": 1.0, "zeros": 0.0}


def class_targets(table: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Class indices [N] (int64); a label outside `classes` is -1 (evaluate reports it, training never sees it)."""
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(label, -1) for label in table["label"]], dtype=np.int64)


def label_targets(table: pd.DataFrame, labels: list[str], data: DataConfig) -> np.ndarray:
    """[N, L] float32 of 1 (present), 0 (absent) or NaN (masked: blank, or uncertain under U-Ignore)."""
    raw = table[[finding_column(name) for name in labels]].to_numpy(dtype=np.float32, copy=True)
    for j, name in enumerate(labels):
        policy = data.uncertain_by_label.get(name, data.uncertain)
        column = raw[:, j]
        column[column == UNCERTAIN] = UNCERTAIN_VALUE[policy]
    return raw


def resolve_task(table: pd.DataFrame, data: DataConfig, where: str) -> str:
    """multiclass or multilabel, from data.task and whether the table carries finding columns."""
    multilabel = is_multilabel(table)
    if data.task == "auto":
        return "multilabel" if multilabel else "multiclass"
    if data.task == "multilabel" and not multilabel:
        raise ValueError(
            f"{where}: data.task=multilabel but this source has one label per image; use a multi-label "
            "source (nih, chexpert, mimic_cxr_jpg, padchest, rsna_pneumonia) or a CSV with finding:<name> "
            "columns, or set data.task: multiclass"
        )
    if data.task == "multiclass" and multilabel:
        raise ValueError(
            f"{where}: data.task=multiclass but this source is multi-label (findings "
            f"{', '.join(finding_names(table)[:4])}, ...); set data.task: multilabel (or auto)"
        )
    return data.task


def resolve_labels(table: pd.DataFrame, labels: list[str] | None, where: str) -> list[str]:
    """The findings to train on: data.labels (checked) or every finding with a positive image."""
    found = finding_names(table)
    if labels is not None:
        unknown = [name for name in labels if name not in found]
        if unknown:
            raise ValueError(
                f"{where}: data.labels {unknown} are not findings of this dataset; choose from {', '.join(found)}"
            )
        chosen = list(labels)
    else:
        chosen = found
    positives = {name: int((table[finding_column(name)] == 1).sum()) for name in chosen}
    empty = [name for name, n in positives.items() if n == 0]
    if labels is None and empty:
        warnings.warn(
            f"{where}: finding(s) {empty} have no positive image and are left out; name them in data.labels "
            "to keep them",
            stacklevel=3,
        )
        chosen = [name for name in chosen if positives[name]]
    elif empty:
        raise ValueError(f"{where}: data.labels {empty} have no positive image; remove them from data.labels")
    if not chosen:
        raise ValueError(f"{where}: no finding has a positive image; a multi-label model needs at least one")
    return chosen


def pos_weights(targets: np.ndarray) -> list[float]:
    """Per-label BCE pos_weight = negatives / positives among the known values (1 where either is 0)."""
    pos = np.nansum(targets == 1, axis=0).astype(float)
    neg = np.nansum(targets == 0, axis=0).astype(float)
    return [float(n / p) if p and n else 1.0 for p, n in zip(pos, neg, strict=True)]
