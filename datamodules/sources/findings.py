"""Multi-label rows: one column per finding, and the summary label that names the positives.

A multi-label adapter writes, for every finding of its dataset, a column `finding:<name>` holding
1.0 (present), 0.0 (absent), -1.0 (uncertain, as CheXpert writes it) or NaN (not stated: a blank
cell). Its `label` column is the summary: the positive findings sorted and joined by "|", or
NO_FINDING when none is positive; inspection, probes and stratification read it.
Boxes (NIH, RSNA) go in `lesion_boxes` as JSON [[x, y, w, h(, finding)], ...] in the original
image's pixels; a box without a finding marks every finding of its image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

PREFIX = "finding:"
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
NO_FINDING = "No Finding"
BOXES = "lesion_boxes"


def finding_column(name: str) -> str:
    """The table column of one finding."""
    return f"{PREFIX}{name}"


def finding_names(table: pd.DataFrame) -> list[str]:
    """The findings a table has columns for, in column order."""
    return [c.removeprefix(PREFIX) for c in table.columns if c.startswith(PREFIX)]


def is_multilabel(table: pd.DataFrame) -> bool:
    """Whether the table carries finding columns."""
    return any(c.startswith(PREFIX) for c in table.columns)


def summary_label(values: Mapping[str, float]) -> str:
    """The positive findings joined by '|' (sorted), or NO_FINDING."""
    positives = sorted(k for k, v in values.items() if not _missing(v) and v == POSITIVE)
    return "|".join(positives) if positives else NO_FINDING


def finding_row(values: Mapping[str, float], findings: list[str] | tuple[str, ...]) -> dict[str, object]:
    """`finding:` columns for every finding (NaN where `values` says nothing) plus the summary label."""
    row: dict[str, object] = {finding_column(f): float(values.get(f, math.nan)) for f in findings}
    row["label"] = summary_label(values)
    return row


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
