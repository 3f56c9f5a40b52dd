"""Patient-grouped stratified splits, k-folds and class balancing on synthetic sample tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlab.datamodules.splits import (
    class_weights,
    downsample,
    fold_index,
    holdout_split,
    kfold_split,
    oversample_index,
)

MAX_PER_PATIENT = 3


def sample_table(per_class: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Rows of patients with 1..MAX_PER_PATIENT images each, `per_class[label]` images a class."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, n in per_class.items():
        p = 0
        while n > 0:
            k = min(n, int(rng.integers(1, MAX_PER_PATIENT + 1)))
            rows += [(f"/x/{label}_{p}_{i}.png", label, f"{label}-{p}") for i in range(k)]
            n, p = n - k, p + 1
    table = pd.DataFrame(rows, columns=["path", "label", "patient_id"])
    return table.sample(frac=1, random_state=seed).reset_index(drop=True)  # order must not matter


COUNTS = {"normal": 120, "covid": 60, "pneumonia": 90}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return sample_table(COUNTS)


def patients_in_one_split(table: pd.DataFrame, split: pd.Series) -> bool:
    return bool((split.groupby(table["patient_id"]).nunique() == 1).all())


def test_holdout_groups_patients(table: pd.DataFrame) -> None:
    split = holdout_split(table, [0.8, 0.1, 0.1], seed=0)
    assert patients_in_one_split(table, split)
    assert set(split) == {"train", "val", "test"}
    assert split.index.equals(table.index)


@pytest.mark.parametrize("fractions", [[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.7, 0.3]])
def test_holdout_keeps_class_ratios(table: pd.DataFrame, fractions: list[float]) -> None:
    """Per class, each split's image count is within a patient's worth of its target.

    Why this tolerance: patients go one at a time to the split with the largest remaining
    deficit, which is never negative when chosen, so a split overshoots its target by less than
    one patient (m images) and, as the deficits sum to zero at the end, undershoots by less than
    (k - 1) * m, k = number of splits.
    """
    split = holdout_split(table, fractions, seed=1)
    m, k = MAX_PER_PATIENT, len(fractions)
    counts = pd.crosstab(table["label"], split)
    for label, total in COUNTS.items():
        for name, frac in zip(("train", "val", "test"), fractions, strict=False):
            target = frac * total
            assert target - (k - 1) * m < counts.loc[label, name] < target + m, (label, name)
    # Overall fractions then hold within (k - 1) * m per class, summed over classes.
    share = split.value_counts(normalize=True)
    for name, frac in zip(("train", "val", "test"), fractions, strict=False):
        assert abs(share[name] - frac) < len(COUNTS) * (k - 1) * m / len(table)


def test_holdout_deterministic_per_seed(table: pd.DataFrame) -> None:
    a = holdout_split(table, [0.8, 0.1, 0.1], seed=5)
    b = holdout_split(table, [0.8, 0.1, 0.1], seed=5)
    c = holdout_split(table, [0.8, 0.1, 0.1], seed=6)
    assert a.equals(b)
    assert (a != c).sum() > 10


def test_holdout_patient_with_mixed_labels() -> None:
    table = sample_table({"a": 30, "b": 30})
    table.loc[0:3, "patient_id"] = "shared"  # four images, possibly of both labels, one patient
    split = holdout_split(table, [0.5, 0.5], seed=0)
    assert patients_in_one_split(table, split)
    assert split.notna().all()


@pytest.mark.parametrize("folds", [3, 4])
def test_kfold_disjoint_covering_grouped_stratified(table: pd.DataFrame, folds: int) -> None:
    fold = fold_index(table, folds, seed=0)
    assert sorted(fold.unique()) == list(range(folds))
    assert len(fold) == len(table) and fold.index.equals(table.index)
    assert patients_in_one_split(table, fold)
    per_fold = pd.crosstab(fold, table["label"])
    assert (per_fold > 0).all().all()  # every fold has every class
    # Stratified: each fold holds about 1/k of every class (whole patients, so +- a few).
    for label, total in COUNTS.items():
        assert (abs(per_fold[label] - total / folds) <= 2 * MAX_PER_PATIENT).all()


def test_kfold_split_marks_one_fold_val(table: pd.DataFrame) -> None:
    fold = fold_index(table, 4, seed=2)
    seen = pd.Series(0, index=table.index)
    for f in range(4):
        split = kfold_split(table, 4, f, seed=2)
        assert set(split) == {"train", "val"}
        assert (split == "val").equals(fold == f)
        seen += split == "val"
    assert (seen == 1).all()  # across folds every row is validated exactly once


def test_kfold_too_few_patients() -> None:
    table = sample_table({"a": 3, "b": 3}, seed=3)
    n = table["patient_id"].nunique()
    with pytest.raises(ValueError, match=f"data.folds={n + 1} but only {n} patients"):
        fold_index(table, n + 1)


def test_downsample_equalises(table: pd.DataFrame) -> None:
    out = downsample(table, seed=0)
    assert out["label"].value_counts().to_dict() == {c: 60 for c in COUNTS}
    assert out.index.isin(table.index).all() and out.index.is_unique
    assert out.equals(downsample(table, seed=0))
    assert not out.index.equals(downsample(table, seed=1).index)


def test_oversample_index() -> None:
    labels = pd.Series(["a"] * 10 + ["b"] * 3 + ["c"] * 6)
    idx = oversample_index(labels, "oversample", seed=0)
    assert len(idx) == 30
    np.testing.assert_array_equal(idx[:19], np.arange(19))  # every original row once, in order
    assert labels.iloc[idx].value_counts().to_dict() == {"a": 10, "b": 10, "c": 10}
    assert np.array_equal(idx, oversample_index(labels, "oversample", seed=0))


def test_augment_minority_index() -> None:
    labels = pd.Series(["a"] * 10 + ["b"] * 3 + ["c"] * 6)
    idx = oversample_index(labels, "augment_minority")
    # Every minority row exactly twice, the majority once: 10 + 2*3 + 2*6 = 28.
    assert len(idx) == 28
    reps = np.bincount(idx, minlength=19)
    np.testing.assert_array_equal(reps, [1] * 10 + [2] * 9)


def test_balanced_labels_untouched_and_bad_mode() -> None:
    labels = pd.Series(["a", "b"] * 4)
    np.testing.assert_array_equal(oversample_index(labels, "oversample"), np.arange(8))
    with pytest.raises(ValueError, match="unknown balancing mode 'smote'"):
        oversample_index(pd.Series(["a", "a", "b"]), "smote")


def test_class_weights_by_hand() -> None:
    labels = pd.Series(["a"] * 6 + ["b"] * 3 + ["c"])
    # n / (k * n_c) = 10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1); output follows `classes` order.
    assert class_weights(labels, ["c", "a", "b"]) == pytest.approx([10 / 3, 10 / 18, 10 / 9])
    assert class_weights(pd.Series(["x", "y"] * 5), ["x", "y"]) == [1.0, 1.0]
