"""The sample table every adapter returns, and the helpers every adapter shares.

Columns: path, label, patient_id, source (+ optional mask_path, lesion_path, split,
official_split). Paths are absolute. `split` is a fixed assignment the user wrote (a CSV column)
and is always used; `official_split` is a dataset's own split, used only with
data.official_split. Adapters may add a `skip` column: the reason a row cannot be used (label
outside the adapter's map, a CT row, a lateral view), empty for rows that can.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

REQUIRED = ("path", "label")
OPTIONAL_PATHS = ("mask_path", "lesion_path")
SPLITS = ("train", "val", "test")
SKIP = "skip"
SKIPPED_COLUMNS = ["path", "error"]


def make_table(rows: Iterable[Mapping[str, Any]], source: str, where: Path) -> pd.DataFrame:
    """A sample table from row dicts (path, label, patient_id, ... [, skip]); fails if empty."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        raise ValueError(f"{where}: no images found for data.source={source}; check data.root")
    table["source"] = source
    if SKIP not in table.columns:
        table[SKIP] = ""
    table[SKIP] = table[SKIP].fillna("")
    return table


def empty_skipped() -> pd.DataFrame:
    """The (path, error) table of skipped files, with no rows."""
    return pd.DataFrame(columns=SKIPPED_COLUMNS)


def stem_patient(path: str) -> str:
    """Without a patient id an image is its own patient (grouping cannot then prevent leakage)."""
    return Path(path).stem


def require_columns(where: Path, present: Iterable[str], needed: Iterable[str], hint: str) -> None:
    """Fail with one line naming the file and the columns it lacks; `hint` says what it should be."""
    have = set(present)
    missing = [c for c in needed if c not in have]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}; {hint}")


def check_files(table: pd.DataFrame, where: str) -> None:
    """Fail with the first few missing paths if any referenced file is absent."""
    cols = ["path"] + [c for c in OPTIONAL_PATHS if c in table.columns]
    missing = [p for c in cols for p in table[c].dropna() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{where}: {len(missing)} referenced file(s) missing, e.g. {', '.join(missing[:3])}; "
            "fix the paths (relative paths are relative to the CSV's folder) or remove those rows"
        )


def select_labels(
    table: pd.DataFrame, label_map: dict[str, str], classes: list[str] | None, other: str
) -> pd.DataFrame:
    """Rename/merge labels, then (other='drop') keep only rows whose label is in `classes`."""
    if label_map:
        table = table.assign(label=table["label"].map(lambda v: label_map.get(v, v)))
    if other == "drop" and classes is not None:
        table = table[table["label"].isin(classes)]
    return table


def resolve_classes(table: pd.DataFrame, classes: list[str] | None, where: str) -> list[str]:
    """The class list: the configured one (checked against the labels) or the sorted labels."""
    found = sorted(table["label"].unique())
    if classes is None:
        if len(found) < 2:
            raise ValueError(f"{where}: only one label ({found}); a classifier needs at least two classes")
        return found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(
            f"{where}: label(s) {unknown} are not in data.classes {classes}; add them to "
            "data.classes, merge them with data.label_map, or set data.other_labels: drop"
        )
    empty = [c for c in classes if c not in found]
    if empty:
        raise ValueError(
            f"{where}: class(es) {empty} in data.classes have no images; remove them from "
            "data.classes or add images"
        )
    return list(classes)
