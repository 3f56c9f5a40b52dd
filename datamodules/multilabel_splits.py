"""Patient-grouped, multi-label stratified splits: iterative stratification on the finding columns.

Iterative stratification (Sechidis, Tsoumakas and Vlahavas 2011, as in scikit-multilearn) with
patients as the units: a patient's label set is the union of its images' positive findings
(uncertain -1.0 and unknown NaN cells count as not positive), and every desired count is in
images, so the image fractions come out close to the requested ones. Two rules come before
Sechidis' choice of part: a part still without a positive of the label goes first (rare findings
reach every split), then a part that still wants images (fractions hold when nearly every patient
has a finding).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrlab.datamodules.sources.findings import POSITIVE, finding_column, finding_names
from cxrlab.datamodules.splits import SPLIT_NAMES


def multilabel_holdout_split(table: pd.DataFrame, fractions: list[float], seed: int = 0) -> pd.Series:
    """Assign train/val[/test] per patient so each split keeps every finding's share."""
    if len(fractions) not in (2, 3):
        raise ValueError(f"data.split needs 2 or 3 fractions (train, val[, test]), got {len(fractions)}")
    part = _assign(table, np.asarray(fractions, dtype=float), seed)
    return part.map(dict(enumerate(SPLIT_NAMES))).rename("split")


def multilabel_kfold_split(table: pd.DataFrame, folds: int, fold: int, seed: int = 0) -> pd.Series:
    """Fold `fold` of a multi-label stratified, patient-grouped k-fold is val; the others are train."""
    index = multilabel_fold_index(table, folds, seed)
    return index.map(lambda f: "val" if f == fold else "train").rename("split")


def multilabel_fold_index(table: pd.DataFrame, folds: int, seed: int = 0) -> pd.Series:
    """The fold (0..folds-1) of every row; folds are disjoint, cover the table and keep finding shares."""
    n_patients = table["patient_id"].nunique()
    if n_patients < folds:
        raise ValueError(f"data.folds={folds} but only {n_patients} patients; lower data.folds")
    return _assign(table, np.full(folds, 1.0 / folds), seed).rename("fold")


def _assign(table: pd.DataFrame, fractions: np.ndarray, seed: int) -> pd.Series:
    """The part (0..len(fractions)-1) of every row, from one part per patient."""
    ids, labels, counts = _patients(table)
    part = _stratify(labels, counts, fractions, np.random.default_rng(seed))
    return table["patient_id"].map(pd.Series(part, index=ids))


def _patients(table: pd.DataFrame) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """Patient ids (sorted, so row order does not matter), their label sets and image counts."""
    columns = [finding_column(f) for f in finding_names(table)]
    positive = table[columns].eq(POSITIVE)  # NaN and -1.0 compare unequal: not positive
    labels = positive.groupby(table["patient_id"], sort=True).any()
    counts = table.groupby("patient_id", sort=True).size()
    return counts.index, labels.to_numpy(dtype=bool).reshape(len(counts), len(columns)), counts.to_numpy()


def _stratify(labels: np.ndarray, counts: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Iterative stratification: the part of every patient, given label sets and image counts."""
    n_labels = labels.shape[1]
    part = np.full(len(counts), -1)
    want_total = fractions * counts.sum()  # images each part still wants
    want = np.outer(fractions, counts @ labels)  # per part and label: images of positive patients
    held = np.zeros((len(fractions), n_labels), dtype=int)  # positive patients per part and label
    open_parts = fractions > 0

    def place(p: int, j: int) -> None:
        part[p] = j
        want_total[j] -= counts[p]
        want[j] -= counts[p] * labels[p]
        held[j] += labels[p]

    while True:
        left = labels[part < 0].sum(axis=0)
        if not left.any():
            break
        # The rarest label first: its few patients decide whether every part gets one; later,
        # commoner labels have enough patients left to even out what the rare ones skewed.
        label = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))
        for p in rng.permutation(np.flatnonzero((part < 0) & labels[:, label])):
            # A part without any positive of this label goes first, so a label with as many
            # patients as parts reaches every part (a small test split would otherwise lose
            # it: 0.1 of three patients is never the largest remaining count). Then a part
            # that still wants images: without it, a table where nearly every patient has a
            # finding missed its image fractions by up to 5 points (1.5 with it, label shares
            # as good). Then Sechidis' order: the largest remaining count for the label, then
            # for all images, then chance.
            lacks = open_parts & (held[:, label] == 0)
            place(p, _argmax(rng, lacks, want_total > 0, want[:, label], want_total))
    # Patients with no positive finding fill what each part still lacks in images.
    for p in rng.permutation(np.flatnonzero(part < 0)):
        place(p, _argmax(rng, want_total))
    return part


def _argmax(rng: np.random.Generator, *keys: np.ndarray) -> int:
    """The position that is largest by the first key, ties broken by the next keys, then at random."""
    return int(np.lexsort((rng.random(len(keys[0])), *reversed(keys)))[-1])
