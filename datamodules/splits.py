"""Patient-grouped, stratified splits and class balancing on the sample table."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from cxrlab.config import Balance

SPLIT_NAMES = ("train", "val", "test")


def _patients(table: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: its majority label and image count."""
    g = table.groupby("patient_id", sort=True)["label"]
    return pd.DataFrame({"label": g.agg(lambda s: s.value_counts().index[0]), "n": g.size()})


def holdout_split(table: pd.DataFrame, fractions: list[float], seed: int = 0) -> pd.Series:
    """Assign train/val[/test] per patient so each split keeps the class ratios.

    Within each class stratum, patients (shuffled by seed) go one by one to the split that is
    furthest below its target image count, which matches fractions closely even for patients
    with several images, and never puts one patient in two splits.
    """
    names = SPLIT_NAMES[: len(fractions)]
    rng = np.random.default_rng(seed)
    patients = _patients(table)
    assignment: dict[str, str] = {}
    for _, stratum in patients.groupby("label", sort=True):
        order = rng.permutation(len(stratum))
        ids, counts = stratum.index.to_numpy()[order], stratum["n"].to_numpy()[order]
        deficit = np.asarray(fractions, dtype=float) * counts.sum()
        for pid, n in zip(ids, counts, strict=True):
            j = int(np.argmax(deficit))
            assignment[pid] = names[j]
            deficit[j] -= n
    return table["patient_id"].map(assignment).rename("split")


def kfold_split(table: pd.DataFrame, folds: int, fold: int, seed: int = 0) -> pd.Series:
    """Fold `fold` of a stratified, patient-grouped k-fold is val; the others are train."""
    return fold_index(table, folds, seed).map(lambda f: "val" if f == fold else "train").rename("split")


def fold_index(table: pd.DataFrame, folds: int, seed: int = 0) -> pd.Series:
    """The fold (0..folds-1) of every row; folds are disjoint and cover the table."""
    n_patients = table["patient_id"].nunique()
    if n_patients < folds:
        raise ValueError(f"data.folds={folds} but only {n_patients} patients; lower data.folds")
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = np.empty(len(table), dtype=int)
    for k, (_, idx) in enumerate(cv.split(np.zeros(len(table)), table["label"], table["patient_id"])):
        out[idx] = k
    return pd.Series(out, index=table.index, name="fold")


def downsample(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Keep an equal number of images per class (the smallest class' count), seeded."""
    n = table["label"].value_counts().min()
    parts = [g.sample(n=n, random_state=seed) for _, g in table.groupby("label", sort=True)]
    return pd.concat(parts).sort_index()


# The data.balance choices that act on the train split: extra rows for one minority class given
# its rows, its shortfall to the majority and the generator. (downsample acts on the whole table.)
TRAIN_BALANCE: dict[Balance, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "oversample": lambda members, shortfall, rng: rng.choice(members, size=shortfall, replace=True),
    "augment_minority": lambda members, shortfall, rng: members,
}


def oversample_index(labels: pd.Series, mode: str, seed: int = 0) -> np.ndarray:
    """Row positions for a balanced training epoch.

    oversample: minority classes are drawn with replacement up to the majority count;
    augment_minority: every minority-class image appears once more (the augmentation makes the
    copy differ), as in the backbone-comparison study.
    """
    if mode not in TRAIN_BALANCE:
        raise ValueError(f"unknown balancing mode {mode!r}; use {' or '.join(TRAIN_BALANCE)}")
    rng = np.random.default_rng(seed)
    pos = np.arange(len(labels))
    counts = labels.value_counts()
    top = counts.max()
    extra = []
    for label, n in counts.items():
        members = pos[(labels == label).to_numpy()]
        if n < top:
            extra.append(TRAIN_BALANCE[mode](members, top - n, rng))
    return np.concatenate([pos, *extra]) if extra else pos


def class_weights(labels: pd.Series, classes: list[str]) -> list[float]:
    """Inverse-frequency loss weights, normalised so a balanced set gets all ones."""
    counts = labels.value_counts()
    n, k = len(labels), len(classes)
    return [float(n / (k * counts[c])) for c in classes]


Splitter = Callable[[pd.DataFrame, list[float], int], pd.Series]


def official_split(
    table: pd.DataFrame, fractions: list[float], seed: int, where: str, holdout: Splitter = holdout_split
) -> pd.Series:
    """The dataset's own split (column official_split); without a val part, val is carved
    from the official train patients with data.split's val share, grouped and stratified
    (by `holdout`: over classes, or over findings for a multi-label table)."""
    if "official_split" not in table.columns or not table["official_split"].isin(SPLIT_NAMES).any():
        raise ValueError(
            f"{where}: data.official_split is on but this source has no official split (coronahack, "
            "kermany, covidx, nih, chexpert and mimic_cxr_jpg have one, a CSV a split column); set "
            "data.official_split: false"
        )
    split = table["official_split"].where(table["official_split"].isin(SPLIT_NAMES), "train")
    if not (split == "val").any():
        train = split == "train"
        share = fractions[1] / (fractions[0] + fractions[1])
        split[train] = holdout(table[train], [1 - share, share], seed)
    return split.rename("split")


def split_leaks(table: pd.DataFrame, column: str = "split") -> pd.DataFrame:
    """Patients whose images sit in more than one split: patient_id, splits, images."""
    g = table.groupby("patient_id")[column]
    seen = g.agg(lambda s: ",".join(sorted(set(s))))
    multi = g.nunique() > 1
    return pd.DataFrame(
        {"patient_id": seen.index[multi], "splits": seen[multi].to_numpy(), "images": g.size()[multi].to_numpy()}
    )
