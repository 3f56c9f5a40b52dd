"""Evaluation math against scikit-learn and hand computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from samples import NAMES, P_SMALL, Y_SMALL
from sklearn import metrics

from cxrlab.experiments.evaluation.clinical import (
    _weighted_ap,
    _weighted_auc,
    binary_metrics,
    bootstrap_auc_ci,
    bootstrap_binary_ci,
    calibration,
    classification_summary,
    cutoff_table,
    per_class_table,
    pr_curves,
    roc_curves,
    threshold_analysis,
    unseen_class_table,
    youden_threshold,
    zero_fn_threshold,
)


def random_case(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative softmax-like probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------- summary


def test_summary_matches_sklearn() -> None:
    y, p = random_case(200, 4, seed=1)
    names = ["a", "b", "c", "d"]
    s = classification_summary(y, p, names)
    pred = p.argmax(1)
    assert s["accuracy"] == metrics.accuracy_score(y, pred)
    prec, rec, f1, sup = metrics.precision_recall_fscore_support(y, pred)
    for c, name in enumerate(names):
        row = s["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == (
            prec[c],
            rec[c],
            f1[c],
            sup[c],
        )
        assert row["sensitivity"] == row["recall"]
        assert row["auc"] == metrics.roc_auc_score(y == c, p[:, c])
    for avg in ("macro", "weighted"):
        exp = metrics.precision_recall_fscore_support(y, pred, average=avg)
        got = s[f"{avg}_avg"]
        assert (got["precision"], got["recall"], got["f1"]) == exp[:3]
        assert got["auc"] == metrics.roc_auc_score(y, p, multi_class="ovr", average=avg)
    onehot = np.eye(4)[y]
    assert s["micro_auc"] == metrics.roc_auc_score(onehot, p, average="micro")
    assert s["confusion_matrix"] == metrics.confusion_matrix(y, pred).tolist()
    assert s["confusion_matrix_normalized"] == (
        metrics.confusion_matrix(y, pred, normalize="true").tolist()
    )
    assert s["auc_excluded"] == {}


def test_specificity_by_hand() -> None:
    s = classification_summary(Y_SMALL, P_SMALL, NAMES)
    assert s["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [1, 0, 3]]
    # TN / (TN + FP): normal 6/7, covid 6/7, pneumonia 5/6.
    spec = [s["per_class"][n]["specificity"] for n in NAMES]
    assert spec == [6 / 7, 6 / 7, 5 / 6]
    assert s["macro_avg"]["specificity"] == pytest.approx((6 / 7 + 6 / 7 + 5 / 6) / 3)
    assert s["weighted_avg"]["specificity"] == pytest.approx(
        (3 * 6 / 7 + 3 * 6 / 7 + 4 * 5 / 6) / 10
    )
    assert s["accuracy"] == 0.7
    assert s["per_class"]["pneumonia"]["recall"] == 0.75


def test_missing_class_auc_is_nan_with_reason() -> None:
    keep = Y_SMALL != 2
    y, p = Y_SMALL[keep], P_SMALL[keep]
    s = classification_summary(y, p, NAMES)
    row = s["per_class"]["pneumonia"]
    assert row["auc"] is None and "absent" in row["auc_reason"]
    assert row["support"] == 0 and row["recall"] == 0.0
    assert s["auc_excluded"] == {"pneumonia": row["auc_reason"]}
    defined = [metrics.roc_auc_score(y == c, p[:, c]) for c in (0, 1)]
    assert s["macro_avg"]["auc"] == pytest.approx(np.mean(defined), abs=1e-15)
    assert s["per_class"]["normal"]["auc_reason"] is None


def test_binary_summary() -> None:
    y, p = random_case(60, 2, seed=2)
    s = classification_summary(y, p, ["neg", "pos"])
    auc = metrics.roc_auc_score(y, p[:, 1])
    assert s["per_class"]["pos"]["auc"] == auc
    assert s["per_class"]["neg"]["auc"] == pytest.approx(auc, abs=1e-12)
    assert s["micro_auc"] == metrics.roc_auc_score(np.eye(2)[y], p, average="micro")
    assert s["per_class"]["pos"]["f1"] == metrics.f1_score(y, p.argmax(1))


def test_summary_json_round_trip() -> None:
    keep = Y_SMALL != 2  # a NaN AUC must become null, not the non-standard NaN token
    s = classification_summary(Y_SMALL[keep], P_SMALL[keep], NAMES)
    text = json.dumps(s, allow_nan=False)
    assert json.loads(text) == s
    assert json.loads(text)["per_class"]["covid"]["auc"] == s["per_class"]["covid"]["auc"]


def test_per_class_table() -> None:
    s = classification_summary(Y_SMALL, P_SMALL, NAMES)
    table = per_class_table(s)
    assert list(table.index) == [*NAMES, "macro avg", "weighted avg"]
    assert table.loc["covid", "specificity"] == pytest.approx(6 / 7)
    assert table.loc["macro avg", "f1"] == s["macro_avg"]["f1"]
    assert table["support"].tolist() == [3, 3, 4, 10, 10]


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="probs must have shape"):
        classification_summary(Y_SMALL, P_SMALL[:5], NAMES)
    with pytest.raises(ValueError, match="y_true values"):
        classification_summary(Y_SMALL + 1, P_SMALL, NAMES)
    with pytest.raises(ValueError, match="class_names"):
        classification_summary(Y_SMALL, P_SMALL, NAMES[:2])
    with pytest.raises(ValueError, match="integer"):
        classification_summary(Y_SMALL.astype(float), P_SMALL, NAMES)


# ---------------------------------------------------------------------------- bootstrap


def test_weighted_auc_matches_sklearn_sample_weight() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(80), 1)  # many ties
    labels = rng.random(80) < 0.4
    counts = rng.integers(0, 4, (5, 80))
    got = _weighted_auc(scores, labels, counts)
    exp = [metrics.roc_auc_score(labels, scores, sample_weight=w) for w in counts]
    assert got == pytest.approx(exp, abs=1e-12)


def test_weighted_ap_matches_sklearn_sample_weight() -> None:
    """Ties form one threshold, as in scikit-learn's average_precision_score; a weight of 0 drops an image."""
    rng = np.random.default_rng(4)
    scores = np.round(rng.random(80), 1)
    labels = rng.random(80) < 0.3
    counts = np.vstack([np.ones(80, dtype=int), rng.integers(0, 4, (5, 80))])
    got = _weighted_ap(scores, labels, counts)
    exp = [metrics.average_precision_score(labels, scores, sample_weight=w) for w in counts]
    assert got == pytest.approx(exp, abs=1e-12)
    assert np.isnan(_weighted_ap(scores, np.zeros(80, dtype=bool), counts[:1]))[0]


def test_binary_bootstrap_auroc_is_the_two_class_bootstrap_and_auprc_brackets_ap() -> None:
    """One finding's AUROC CI equals bootstrap_auc_ci on its two-class stack (the same draws);
    the AUPRC CI holds the finding's average precision."""
    rng = np.random.default_rng(5)
    y = (rng.random(120) < 0.3).astype(int)
    p = np.clip(0.35 * y + rng.random(120) * 0.7, 0, 1)
    ci = bootstrap_binary_ci(p, y, n_boot=300, seed=2)
    assert ci["auroc"] == pytest.approx(bootstrap_auc_ci(y, np.stack([1 - p, p], 1), n_boot=300, seed=2)[1])
    lo, hi = ci["auprc"]
    assert lo < metrics.average_precision_score(y, p) < hi and hi - lo < 0.3


def test_bootstrap_ci_contains_point_deterministic_and_narrows() -> None:
    y, p = random_case(150, 3, seed=4)
    ci = bootstrap_auc_ci(y, p, n_boot=300, seed=7)
    assert ci == bootstrap_auc_ci(y, p, n_boot=300, seed=7)
    assert ci != bootstrap_auc_ci(y, p, n_boot=300, seed=8)
    s = classification_summary(y, p, ["a", "b", "c"])
    for c, name in enumerate("abc"):
        lo, hi = ci[c]
        assert lo < s["per_class"][name]["auc"] < hi
    assert ci["macro"][0] < s["macro_avg"]["auc"] < ci["macro"][1]
    assert ci["micro"][0] < s["micro_auc"] < ci["micro"][1]
    # Four copies of the data: same point AUCs, about half the interval width.
    big = bootstrap_auc_ci(np.tile(y, 4), np.tile(p, (4, 1)), n_boot=300, seed=7)
    for key in (0, 1, 2, "macro", "micro"):
        assert big[key][1] - big[key][0] < 0.7 * (ci[key][1] - ci[key][0])


def test_bootstrap_skips_resamples_missing_a_class() -> None:
    y = np.array([0] * 10 + [1] * 10 + [2])  # one image of class 2: plain resamples often lose it
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(3), y.size)
    for stratified in (False, True):
        ci = bootstrap_auc_ci(y, p, n_boot=200, seed=0, stratified=stratified)
        assert all(np.isfinite(ci[k]).all() for k in (0, 1, 2, "macro", "micro"))
        assert 0 <= ci[2][0] <= ci[2][1] <= 1


def test_bootstrap_absent_class_is_nan() -> None:
    keep = Y_SMALL != 2
    ci = bootstrap_auc_ci(Y_SMALL[keep], P_SMALL[keep], n_boot=50)
    assert all(math.isnan(v) for v in ci[2])
    assert np.isfinite(ci[0]).all() and np.isfinite(ci["macro"]).all()
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_auc_ci(Y_SMALL, P_SMALL, alpha=1.5)


# ---------------------------------------------------------------------------- curves


def test_roc_and_pr_curves_match_sklearn() -> None:
    keep = Y_SMALL != 2
    y, p = Y_SMALL[keep], P_SMALL[keep]
    roc, pr = roc_curves(y, p), pr_curves(y, p)
    assert set(roc) == set(pr) == {0, 1}
    for c in (0, 1):
        fpr, tpr, thr = metrics.roc_curve(y == c, p[:, c])
        np.testing.assert_array_equal(roc[c].fpr, fpr)
        np.testing.assert_array_equal(roc[c].tpr, tpr)
        np.testing.assert_array_equal(roc[c].thresholds, thr)
        assert roc[c].auc == pytest.approx(metrics.roc_auc_score(y == c, p[:, c]), abs=1e-15)
        prec, rec, _ = metrics.precision_recall_curve(y == c, p[:, c])
        np.testing.assert_array_equal(pr[c].precision, prec)
        np.testing.assert_array_equal(pr[c].recall, rec)
        assert pr[c].average_precision == metrics.average_precision_score(y == c, p[:, c])


# ---------------------------------------------------------------------------- thresholds

SCORES = np.array([0.05, 0.2, 0.3, 0.3, 0.45, 0.5, 0.6, 0.7, 0.8, 0.95])
POS = np.array([0, 0, 0, 1, 0, 1, 0, 1, 1, 1], dtype=bool)


def counts_at(scores: np.ndarray, pos: np.ndarray, t: float) -> tuple[int, int]:
    """(false negatives, false positives) for predicting positive at score >= t."""
    return int((pos & (scores < t)).sum()), int((~pos & (scores >= t)).sum())


def test_zero_fn_threshold_is_largest_and_fewest_fp() -> None:
    t = zero_fn_threshold(SCORES, POS)
    assert t == 0.3
    fn, fp = counts_at(SCORES, POS, t)
    assert fn == 0 and fp == 3  # negatives at 0.3 (tied), 0.45 and 0.6
    # Any larger threshold misses a positive.
    assert counts_at(SCORES, POS, np.nextafter(t, 1))[0] >= 1
    for u in np.unique(SCORES):
        u_fn, u_fp = counts_at(SCORES, POS, u)
        if u > t:
            assert u_fn >= 1
        if u_fn == 0:
            assert u_fp >= fp
    with pytest.raises(ValueError, match="no positives"):
        zero_fn_threshold(SCORES, np.zeros(10, dtype=bool))


def test_youden_matches_brute_force() -> None:
    rng = np.random.default_rng(6)
    for _ in range(5):
        scores = np.round(rng.random(40), 2)
        pos = rng.random(40) < 0.5
        t = youden_threshold(scores, pos)

        def j(u: float, s: np.ndarray = scores, p: np.ndarray = pos) -> float:
            m = binary_metrics(s, p, u)
            return m["sensitivity"] + m["specificity"] - 1

        brute = {u: j(u) for u in np.unique(scores)}
        best = max(brute.values())
        assert j(t) == pytest.approx(best, abs=1e-12)
        assert t == max(u for u, v in brute.items() if v >= best - 1e-12)


def test_binary_metrics_by_hand() -> None:
    m = binary_metrics(SCORES, POS, 0.5)
    # Flagged: 0.5 (pos), 0.6 (neg), 0.7, 0.8, 0.95 (pos) → TP 4, FP 1; 0.3 pos missed.
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (4, 1, 4, 1)
    assert m["sensitivity"] == 0.8 and m["specificity"] == 0.8
    assert m["accuracy"] == 0.8 and m["ppv"] == 0.8 and m["npv"] == 0.8
    assert m["share_flagged"] == 0.5
    none = binary_metrics(SCORES, POS, 0.99)
    assert none["tp"] == 0 and math.isnan(none["ppv"]) and none["share_flagged"] == 0


def test_cutoff_table_rows() -> None:
    table = cutoff_table(SCORES, POS, (0.5, 0.9))
    assert table["threshold"].tolist() == [0.5, 0.9]
    assert table["tp"].tolist() == [4, 1]
    assert table["fn"].tolist() == [1, 4]
    assert table.loc[1, "specificity"] == 1.0


def test_threshold_analysis_chooses_on_validation_only() -> None:
    rng = np.random.default_rng(8)
    test_scores, test_pos = rng.random(30), rng.random(30) < 0.4
    a = threshold_analysis(SCORES, POS, test_scores, test_pos, cutoffs=(0.5, 0.9))
    b = threshold_analysis(SCORES, POS, rng.random(30), test_pos, cutoffs=(0.5, 0.9))
    assert a["thresholds"] == b["thresholds"]
    assert a["thresholds"] == {
        "zero_fn": zero_fn_threshold(SCORES, POS),
        "youden": youden_threshold(SCORES, POS),
    }
    chosen = a["chosen"].set_index(["rule", "split"])
    for rule, t in a["thresholds"].items():
        val_row = chosen.loc[(rule, "validation")]
        test_row = chosen.loc[(rule, "test")]
        assert val_row["threshold"] == test_row["threshold"] == t
        assert test_row["tp"] == binary_metrics(test_scores, test_pos, t)["tp"]
    assert chosen.loc[("zero_fn", "validation"), "fn"] == 0
    assert a["cutoffs"]["split"].tolist() == ["validation", "validation", "test", "test"]
    assert a["cutoffs"]["tp"].tolist()[:2] == [4, 1]


# ---------------------------------------------------------------------------- calibration


def test_ece_by_hand() -> None:
    # Top-label confidences 0.9, 0.8, 0.6, 0.7, 0.55; correct 1, 0, 1, 1, 0.
    top = np.array([0.9, 0.8, 0.6, 0.7, 0.55])
    probs = np.stack([top, 1 - top], axis=1)
    y = np.array([0, 1, 0, 0, 1])
    cal = calibration(y, probs, n_bins=4)
    # Bin (0.5, 0.75]: conf 0.6167, acc 2/3; bin (0.75, 1]: conf 0.85, acc 0.5.
    assert cal["count"] == [0, 0, 3, 2]
    assert cal["confidence"][2:] == pytest.approx([1.85 / 3, 0.85])
    assert cal["accuracy"][2:] == pytest.approx([2 / 3, 0.5])
    assert all(math.isnan(v) for v in cal["accuracy"][:2])
    assert cal["ece"] == pytest.approx(3 / 5 * abs(2 / 3 - 1.85 / 3) + 2 / 5 * 0.35)
    assert cal["mce"] == pytest.approx(0.35)
    assert cal["bin_edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_calibration_bins_are_right_closed() -> None:
    probs = np.array([[0.75, 0.25], [0.5, 0.5]])
    cal = calibration(np.array([0, 0]), probs, n_bins=4)
    assert cal["count"] == [0, 1, 1, 0]


# ---------------------------------------------------------------------------- unseen


def test_unseen_class_table_counts_and_shares() -> None:
    true = ["covid", "tb", "tb", "tb", "fibrosis", "normal"]
    pred = ["covid", "covid", "normal", "covid", "normal", "normal"]
    table = unseen_class_table(true, pred, known=["normal", "covid"]).set_index("true label")
    assert list(table.index) == ["fibrosis", "tb"]
    assert table.loc["tb", ["n", "normal", "covid"]].tolist() == [3, 1, 2]
    assert table.loc["tb", "covid share"] == pytest.approx(2 / 3)
    assert table.loc["fibrosis", ["normal share", "covid share"]].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="not in known"):
        unseen_class_table(["tb"], ["lung cancer"], known=["normal"])
