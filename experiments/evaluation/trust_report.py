"""The report's trust section: how much of the evaluated data the model may speak for (out of
distribution, atypical heatmaps, shortcut flags) and its calibration before and after scaling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom

from cxrlab.callbacks.trust.calibration import expected_calibration_error
from cxrlab.callbacks.trust.model_trust import Trust
from cxrlab.experiments.evaluation.data import UNSEEN
from cxrlab.experiments.evaluation.outputs import Predictions
from cxrlab.experiments.evaluation.report import Section

TRUST_CSV = "trust.csv"


# How unlikely the flagged count must be, were the images like the training data, to call them foreign:
# a share alone calls 4 of 36 films foreign when 5 % are expected, which happens one time in ten.
FOREIGN_P = 0.001


def is_foreign(flagged: int, n: int, expected: float) -> bool:
    """Whether `flagged` of `n` images out of distribution is far more than the `expected` share
    explains: more than twice that share, and that many less likely than FOREIGN_P by chance."""
    return n > 0 and flagged > 2 * expected * n and float(binom.sf(flagged - 1, n, expected)) < FOREIGN_P


def _share(values: pd.Series) -> float:
    return float(values.astype(bool).mean()) if len(values) else float("nan")


def ood_summary(verdicts: pd.DataFrame, ood_pass: float) -> dict[str, Any]:
    """Shares of out-of-distribution images and shortcut flags among `verdicts`, and whether so
    many are out of distribution that the data is foreign to the model."""
    out = ~verdicts["in_distribution"].astype(bool)
    # The threshold lets 1 - ood_pass of in-distribution images fail; far more means the data is
    # not what the model was trained on.
    expected = 1 - ood_pass
    return {
        "n": len(verdicts),
        "ood_share": _share(out),
        "shortcut_flag_share": _share(verdicts["shortcut_flag"].eq(True)),
        "foreign": is_foreign(int(out.sum()), len(out), expected),
        "expected_ood_share": expected,
    }


def trust_summary(preds: Predictions, verdicts: pd.DataFrame, trust: Trust, split: str, ood_pass: float) -> dict[str, Any]:
    """ood_summary on the evaluated split (images of unseen labels included), with the share of
    atypical heatmaps and the split's ECE before and after calibration."""
    in_split = preds.rows["split"].isin([split, UNSEEN]).to_numpy() | (split == "all")
    v = verdicts[in_split]
    y, probs = preds.known(split)
    known = preds.rows["known"].to_numpy(bool) & in_split & ~preds.rows["split"].eq(UNSEEN).to_numpy()
    calibrated = verdicts.loc[known, [c for c in verdicts if c.startswith("calibrated_p_")]].to_numpy()
    return ood_summary(v, ood_pass) | {
        "atypical_share": _share(v["explanation_typical"].eq(False)),
        "temperature": trust.temperature,
        "ece_before": expected_calibration_error(probs, y) if len(y) else None,
        "ece_after": expected_calibration_error(calibrated, y) if len(y) else None,
    }


def trust_sentence(t: dict[str, Any]) -> str:
    """The trust verdict in one line, as the report opens with it."""
    if t["foreign"]:
        return (
            f"WARNING: {t['ood_share']:.0%} of the {t['n']} evaluated images are out of distribution for this model "
            f"(about {t['expected_ood_share']:.0%} of images like its training data are): they are unlike what it "
            "was trained on, and its predictions and the metrics below are not reliable for them."
        )
    return (
        f"{t['ood_share']:.0%} of the {t['n']} evaluated images are out of distribution (about "
        f"{t['expected_ood_share']:.0%} expected of images like the training data)."
    )


def trust_section(rows: pd.DataFrame, verdicts: pd.DataFrame, t: dict[str, Any], out: Path) -> Section:
    """The section, and trust.csv: every evaluated image (`rows`, in the verdicts' order) with its
    verdicts; a multi-label model's summary (ood_summary alone) has no template or calibration rows."""
    frame = pd.concat([rows[["path", "split", "label"]].reset_index(drop=True), verdicts], axis=1)
    frame.to_csv(out / TRUST_CSV, index=False)
    fmt = lambda v: "n/a" if v is None or np.isnan(v) else f"{v:.3f}"  # noqa: E731
    checks = [("out of distribution", f"{t['ood_share']:.1%}")]
    text = ("Out of distribution: the image's pooled features are farther from the training images than "
            "the threshold set on the validation split.")
    if "atypical_share" in t:
        checks.append(("atypical heatmap (unlike its class's template)", f"{t['atypical_share']:.1%}"))
        text += (" Atypical: its heatmap correlates with its predicted class's average heatmap less than the "
                 "validation images did.")
    checks.append(("shortcut flag (heatmap outside the anatomy)", f"{t['shortcut_flag_share']:.1%}"))
    if "ece_before" in t:
        checks += [("ECE, model's probabilities", fmt(t["ece_before"])),
                   (f"ECE, calibrated (temperature {t['temperature']:.2f})", fmt(t["ece_after"]))]
    return Section(
        "Can these predictions be trusted?",
        [trust_sentence(t), f"{text} Per image: {TRUST_CSV}."],
        tables=[pd.DataFrame(checks, columns=["check", "value"])],
    )
