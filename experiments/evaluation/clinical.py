"""Clinical-style evaluation math: summaries, bootstrap CIs, curves, thresholds, calibration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn import metrics

from cxrlab.callbacks.trust.calibration import expected_calibration_error, reliability_bins

# Bound on resample-count elements held at once, so the bootstrap's memory stays flat with N.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000


class RocCurve(NamedTuple):
    """One-vs-rest ROC curve of one class."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


class PrCurve(NamedTuple):
    """One-vs-rest precision-recall curve of one class."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    average_precision: float


# ---------------------------------------------------------------------------- validation


def _check_labels_probs(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate (y_true [N] ints, probs [N, K]) and return them as numpy arrays."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    if p.ndim != 2 or p.shape[0] != y.size or p.shape[1] < 2:
        raise ValueError(f"probs must have shape [N={y.size}, K>=2] matching y_true, got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probs contains NaN or inf: pass finite softmax probabilities")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true values must lie in 0..{p.shape[1] - 1} (the columns of probs)")
    if class_names is not None:
        if len(class_names) != p.shape[1] or len(set(class_names)) != len(class_names):
            raise ValueError(
                f"class_names must be {p.shape[1]} unique names (one per probs column), "
                f"got {list(class_names)}"
            )
    return y, p


def _check_binary(scores: np.ndarray, is_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a binary problem (scores [N] floats, is_positive [N] bool-like)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(is_positive)
    if s.ndim != 1 or s.size == 0 or pos.shape != s.shape:
        raise ValueError(
            f"scores and is_positive must be non-empty 1-D arrays of one length, "
            f"got {s.shape} and {pos.shape}"
        )
    if not np.isfinite(s).all():
        raise ValueError("scores contains NaN or inf: pass finite probabilities")
    if pos.dtype != bool:
        if not np.isin(pos, (0, 1)).all():
            raise ValueError("is_positive must be boolean or 0/1")
        pos = pos.astype(bool)
    return s, pos


# ---------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/pandas values to plain JSON types, mapping NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---------------------------------------------------------------------------- summary


def _auc_reason(n_pos: int, n: int) -> str | None:
    """Why a one-vs-rest AUC is undefined for a class with n_pos of n images, or None."""
    if n_pos == 0:
        return "class absent from y_true: no positives"
    if n_pos == n:
        return "only this class in y_true: no negatives"
    return None


def _specificity(cm: np.ndarray) -> np.ndarray:
    """One-vs-rest TN / (TN + FP) per class; NaN for a class without negatives (one-class data)."""
    negatives = cm.sum() - cm.sum(axis=1)
    false_pos = cm.sum(axis=0) - np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(negatives > 0, (negatives - false_pos) / negatives, np.nan)


def _one_vs_rest_auc(y: np.ndarray, p: np.ndarray, onehot: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Per-class AUC, NaN where it is undefined, and the reason for each NaN."""
    n_pos = onehot.sum(axis=0)
    reasons = [_auc_reason(int(n_pos[c]), y.size) for c in range(p.shape[1])]
    auc = np.array(
        [metrics.roc_auc_score(onehot[:, c], p[:, c]) if r is None else np.nan for c, r in enumerate(reasons)]
    )
    return auc, reasons


def _averages(
    y: np.ndarray, y_pred: np.ndarray, average: str, weights: np.ndarray, specificity: np.ndarray, auc: np.ndarray
) -> dict[str, float]:
    """Macro or weighted precision, recall, F1, specificity and AUC (the undefined ones left out)."""
    labels = np.arange(len(weights))
    p_avg, r_avg, f_avg, _ = metrics.precision_recall_fscore_support(
        y, y_pred, labels=labels, average=average, zero_division=0
    )
    spec_ok, auc_ok = np.isfinite(specificity), np.isfinite(auc)
    return {
        "precision": p_avg,
        "recall": r_avg,
        "sensitivity": r_avg,
        "f1": f_avg,
        "specificity": np.average(specificity[spec_ok], weights=weights[spec_ok])
        if spec_ok.any() and weights[spec_ok].sum() > 0
        else np.nan,
        "auc": np.average(auc[auc_ok], weights=weights[auc_ok]) if auc_ok.any() else np.nan,
    }


def classification_summary(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class/macro/weighted scores, confusion matrices and AUCs as plain JSON."""
    y, p = _check_labels_probs(y_true, probs, class_names)
    k = p.shape[1]
    labels = np.arange(k)
    y_pred = p.argmax(axis=1)
    onehot = np.eye(k, dtype=np.int64)[y]
    cm = metrics.confusion_matrix(y, y_pred, labels=labels)
    prec, rec, f1, support = metrics.precision_recall_fscore_support(
        y, y_pred, labels=labels, zero_division=0
    )
    specificity = _specificity(cm)
    auc, reasons = _one_vs_rest_auc(y, p, onehot)
    per_class = {
        name: {
            "precision": prec[c], "recall": rec[c], "sensitivity": rec[c], "specificity": specificity[c],
            "f1": f1[c], "support": support[c], "auc": auc[c], "auc_reason": reasons[c],
        }
        for c, name in enumerate(class_names)
    }
    summary = {
        "class_names": list(class_names),
        "n": y.size,
        "accuracy": metrics.accuracy_score(y, y_pred),
        "per_class": per_class,
        "macro_avg": _averages(y, y_pred, "macro", np.ones(k), specificity, auc),
        "weighted_avg": _averages(y, y_pred, "weighted", support.astype(np.float64), specificity, auc),
        "micro_auc": metrics.roc_auc_score(onehot.ravel(), p.ravel()),
        "auc_excluded": {name: reasons[c] for c, name in enumerate(class_names) if reasons[c] is not None},
        "confusion_matrix": cm,
        "confusion_matrix_normalized": metrics.confusion_matrix(y, y_pred, labels=labels, normalize="true"),
    }
    return to_jsonable(summary)


def per_class_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Per-class, macro and weighted rows of a classification_summary as a report table."""
    columns = ["precision", "recall", "specificity", "f1", "auc"]
    rows = {name: row for name, row in summary["per_class"].items()}
    rows["macro avg"] = summary["macro_avg"]
    rows["weighted avg"] = summary["weighted_avg"]
    table = pd.DataFrame.from_dict(
        {name: {c: row[c] for c in columns} for name, row in rows.items()}, orient="index"
    ).astype(float)
    support = [summary["per_class"][n]["support"] for n in summary["class_names"]]
    table["support"] = [*support, sum(support), sum(support)]
    table.index.name = "class"
    return table


# ---------------------------------------------------------------------------- bootstrap


def _weighted_auc(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of one binary problem under B integer weightings counts [B, N] → [B] (NaN if undefined)."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # Tied scores form one group: a positive tied with a negative counts half (Mann-Whitney).
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    c = counts[:, order].astype(np.float64)
    pos_c = np.where(labels[order], c, 0.0)
    pos_g = np.add.reduceat(pos_c, starts, axis=1)
    neg_g = np.add.reduceat(c - pos_c, starts, axis=1)
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    wins = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)
    pairs = pos_g.sum(axis=1) * neg_g.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def _weighted_ap(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average precision of one binary problem under B integer weightings counts [B, N] → [B]
    (NaN without positives): scikit-learn's step sum, each tied-score group one threshold."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    c = counts[:, order].astype(np.float64)
    pos_c = np.where(labels[order], c, 0.0)
    pos_g = np.add.reduceat(pos_c, starts, axis=1)
    flagged = np.cumsum(np.add.reduceat(c, starts, axis=1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # A group adds its share of the positives (recall step) times the precision at its threshold.
        precision = np.where(flagged > 0, np.cumsum(pos_g, axis=1) / flagged, 0.0)
        total = pos_g.sum(axis=1)
        return np.where(total > 0, (pos_g * precision).sum(axis=1) / total, np.nan)


def _resample_counts(
    y: np.ndarray, n_boot: int, rng: np.random.Generator, stratified: bool
) -> np.ndarray:
    """How often each image is drawn in each of n_boot bootstrap resamples → [n_boot, N]."""
    n = y.size
    if stratified:
        # Resample within each class so every resample keeps the observed class sizes.
        groups = [np.flatnonzero(y == c) for c in np.unique(y)]
        idx = np.concatenate([g[rng.integers(0, g.size, (n_boot, g.size))] for g in groups], 1)
    else:
        idx = rng.integers(0, n, (n_boot, n))
    flat = (idx + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)


def _percentile_ci(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval of the finite values, (NaN, NaN) when there are none."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def bootstrap_binary_ci(
    scores: np.ndarray, is_positive: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of one yes/no question's AUROC and AUPRC (average precision), both
    from the same resamples; a resample without both answers is left out."""
    s, pos = _check_binary(scores, is_positive)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // max(1, s.size))
    aurocs, auprcs = [], []
    for start in range(0, n_boot, chunk):
        counts = _resample_counts(pos.astype(int), min(chunk, n_boot - start), rng, stratified=False)
        aurocs.append(_weighted_auc(s, pos, counts))
        auprcs.append(_weighted_ap(s, pos, counts))
    auroc, auprc = np.concatenate(aurocs), np.concatenate(auprcs)
    kept = np.isfinite(auroc)  # both answers drawn: AUPRC alone would also be defined without negatives
    return {"auroc": _percentile_ci(auroc[kept], alpha), "auprc": _percentile_ci(auprc[kept], alpha)}


def bootstrap_auc_ci(
    y_true: np.ndarray,
    probs: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = False,
) -> dict[int | str, tuple[float, float]]:
    """Percentile bootstrap CIs of one-vs-rest AUC per class index, plus "macro" and "micro"."""
    y, p = _check_labels_probs(y_true, probs)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n, k = p.shape
    onehot = np.eye(k, dtype=bool)[y]
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // (n * k))
    per_class, micro = [], []
    for start in range(0, n_boot, chunk):
        counts = _resample_counts(y, min(chunk, n_boot - start), rng, stratified)
        per_class.append(
            np.stack([_weighted_auc(p[:, c], onehot[:, c], counts) for c in range(k)], axis=1)
        )
        # Micro AUC pools all (image, class) pairs; an image's K pairs share its draw count.
        micro.append(_weighted_auc(p.ravel(), onehot.ravel(), np.repeat(counts, k, axis=1)))
    aucs, micro_aucs = np.concatenate(per_class), np.concatenate(micro)

    # A resample that loses a class (all of it, or all else) leaves that class's AUC undefined.
    defined = (onehot.sum(0) > 0) & (onehot.sum(0) < n)
    kept = np.isfinite(aucs[:, defined]).all(axis=1)
    result: dict[int | str, tuple[float, float]] = {
        c: _percentile_ci(aucs[kept, c], alpha) if defined[c] else (math.nan, math.nan)
        for c in range(k)
    }
    macro = aucs[kept][:, defined].mean(axis=1) if defined.any() else np.array([])
    result["macro"] = _percentile_ci(macro, alpha)
    result["micro"] = _percentile_ci(micro_aucs[kept], alpha)
    return result


# ---------------------------------------------------------------------------- curves


def roc_curves(y_true: np.ndarray, probs: np.ndarray) -> dict[int, RocCurve]:
    """One-vs-rest ROC curve per class index; classes without positives or negatives are left out."""
    y, p = _check_labels_probs(y_true, probs)
    curves = {}
    for c in range(p.shape[1]):
        if _auc_reason(int((y == c).sum()), y.size) is None:
            fpr, tpr, thr = metrics.roc_curve(y == c, p[:, c])
            curves[c] = RocCurve(fpr, tpr, thr, float(metrics.auc(fpr, tpr)))
    return curves


def micro_roc_curve(y_true: np.ndarray, probs: np.ndarray) -> RocCurve:
    """Micro-average ROC curve: every (image, class) pair pooled as one binary problem."""
    y, p = _check_labels_probs(y_true, probs)
    onehot = np.eye(p.shape[1], dtype=bool)[y]
    fpr, tpr, thr = metrics.roc_curve(onehot.ravel(), p.ravel())
    return RocCurve(fpr, tpr, thr, float(metrics.auc(fpr, tpr)))


def label_curves(targets: np.ndarray, probs: np.ndarray) -> tuple[dict[int, RocCurve], dict[int, PrCurve]]:
    """Multi-label: the ROC and PR curve of each finding over its known (non-NaN) targets; findings
    without both a positive and a negative are left out."""
    rocs, prs = {}, {}
    for j in range(probs.shape[1]):
        known = ~np.isnan(targets[:, j])
        y, p = targets[known, j] == 1, np.asarray(probs[known, j], dtype=np.float64)
        if y.any() and not y.all():
            fpr, tpr, thr = metrics.roc_curve(y, p)
            rocs[j] = RocCurve(fpr, tpr, thr, float(metrics.auc(fpr, tpr)))
            prec, rec, thr = metrics.precision_recall_curve(y, p)
            prs[j] = PrCurve(prec, rec, thr, float(metrics.average_precision_score(y, p)))
    return rocs, prs


def pr_curves(y_true: np.ndarray, probs: np.ndarray) -> dict[int, PrCurve]:
    """One-vs-rest precision-recall curve per class index; classes without positives are left out."""
    y, p = _check_labels_probs(y_true, probs)
    curves = {}
    for c in range(p.shape[1]):
        if (y == c).any():
            prec, rec, thr = metrics.precision_recall_curve(y == c, p[:, c])
            ap = float(metrics.average_precision_score(y == c, p[:, c]))
            curves[c] = PrCurve(prec, rec, thr, ap)
    return curves


# ---------------------------------------------------------------------------- thresholds


def zero_fn_threshold(scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Largest threshold (predict positive at score >= t) with zero false negatives."""
    s, pos = _check_binary(scores, is_positive)
    if not pos.any():
        raise ValueError("is_positive has no positives: a zero-false-negative threshold needs some")
    # Any larger t misses the lowest-scored positive; any smaller t only adds false positives.
    return float(s[pos].min())


def youden_threshold(scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Largest ROC threshold maximising Youden's J = sensitivity + specificity - 1."""
    s, pos = _check_binary(scores, is_positive)
    if pos.all() or not pos.any():
        raise ValueError("is_positive must contain both positives and negatives for Youden's J")
    fpr, tpr, thr = metrics.roc_curve(pos, s, drop_intermediate=False)
    # thr[0] is +inf (nothing flagged, J = 0); argmax takes the first, i.e. largest, maximiser.
    best = int(np.argmax((tpr - fpr)[1:])) + 1
    return float(thr[best])


def _ratio(num: int, den: int) -> float:
    """num / den, NaN when den is zero."""
    return num / den if den else math.nan


def binary_metrics(
    scores: np.ndarray, is_positive: np.ndarray, threshold: float
) -> dict[str, float | int]:
    """Confusion counts and clinical rates when predicting positive for score >= threshold."""
    s, pos = _check_binary(scores, is_positive)
    flagged = s >= threshold
    tp = int((flagged & pos).sum())
    fp = int((flagged & ~pos).sum())
    fn = int((~flagged & pos).sum())
    tn = int((~flagged & ~pos).sum())
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, s.size),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "share_flagged": _ratio(tp + fp, s.size),
    }


def cutoff_table(
    scores: np.ndarray, is_positive: np.ndarray, cutoffs: Sequence[float] = (0.5, 0.9)
) -> pd.DataFrame:
    """One row of binary_metrics per confidence cut-off."""
    return pd.DataFrame([binary_metrics(scores, is_positive, t) for t in cutoffs])


def threshold_analysis(
    val_scores: np.ndarray,
    val_pos: np.ndarray,
    test_scores: np.ndarray,
    test_pos: np.ndarray,
    cutoffs: Sequence[float] = (0.5, 0.9),
    split_names: tuple[str, str] = ("validation", "test"),
) -> dict[str, Any]:
    """Choose zero-FN and Youden thresholds on validation, apply them to both splits, add cut-offs."""
    thresholds = {
        "zero_fn": zero_fn_threshold(val_scores, val_pos),
        "youden": youden_threshold(val_scores, val_pos),
    }
    # Two equal names mean one split evaluated in-sample: its rows then appear once.
    splits = dict(zip(split_names, ((val_scores, val_pos), (test_scores, test_pos)), strict=True))
    chosen = pd.DataFrame(
        [
            {"rule": rule, "split": split, **binary_metrics(s, pos, t)}
            for rule, t in thresholds.items()
            for split, (s, pos) in splits.items()
        ]
    )
    cutoff_rows = pd.concat(
        [cutoff_table(s, pos, cutoffs).assign(split=split) for split, (s, pos) in splits.items()],
        ignore_index=True,
    )
    columns = ["split", *cutoff_rows.columns.drop("split")]
    return {"thresholds": thresholds, "chosen": chosen, "cutoffs": cutoff_rows[columns]}


# ---------------------------------------------------------------------------- calibration


def calibration(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict[str, Any]:
    """Top-label reliability in equal-width bins (lo, hi] with ECE and MCE."""
    y, p = _check_labels_probs(y_true, probs)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    count, mean_conf, accuracy = reliability_bins(p, y, n_bins)
    gap = np.abs(accuracy - mean_conf)
    filled = count > 0
    return {
        "n_bins": n_bins,
        "ece": expected_calibration_error(p, y, n_bins),
        "mce": float(gap[filled].max()),
        "bin_edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": accuracy.tolist(),
        "count": count.tolist(),
    }


# ---------------------------------------------------------------------------- unseen classes


def unseen_class_table(
    true_labels: Sequence[str], pred_labels: Sequence[str], known: Sequence[str]
) -> pd.DataFrame:
    """How images of labels unseen in training were predicted: counts and row shares per class."""
    if len(true_labels) != len(pred_labels):
        raise ValueError(
            f"true_labels and pred_labels must have one length, "
            f"got {len(true_labels)} and {len(pred_labels)}"
        )
    stray = sorted(set(pred_labels) - set(known))
    if stray:
        raise ValueError(f"pred_labels contains {stray}, which are not in known={list(known)}")
    frame = pd.DataFrame({"true": list(true_labels), "pred": list(pred_labels)})
    frame = frame[~frame["true"].isin(known)]
    counts = pd.crosstab(
        pd.Categorical(frame["true"], categories=sorted(frame["true"].unique())),
        pd.Categorical(frame["pred"], categories=list(known)),
        dropna=False,
    )
    counts.columns = list(known)
    n = counts.sum(axis=1)
    shares = counts.div(n, axis=0).add_suffix(" share")
    table = pd.concat([n.rename("n"), counts, shares], axis=1)
    table.index.name = "true label"
    table.columns.name = None
    return table.reset_index()
