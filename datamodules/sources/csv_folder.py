"""The generic adapters: a CSV of paths, the phantom set's metadata.csv, class-per-folder trees."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pandas as pd

from cxrlab.config import MAX_TABLE_BYTES, check_size
from cxrlab.datamodules.images import IMAGE_SUFFIXES
from cxrlab.datamodules.sources.findings import NEGATIVE, POSITIVE, PREFIX, UNCERTAIN
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.screen import strict_error
from cxrlab.datamodules.sources.table import OPTIONAL_PATHS, REQUIRED, SPLITS, require_columns

FINDING_VALUES = (POSITIVE, NEGATIVE, UNCERTAIN)


def _resolve(table: pd.DataFrame, base: Path, column: str) -> pd.Series:
    """Absolute paths; relative ones are taken relative to `base`."""
    def one(p: object) -> object:
        if not isinstance(p, str) or not p:
            return None
        # Normalised but not resolved: a symlink keeps its own path, so the data-root check
        # (cxrlab.datamodules.sources.screen) can still see where it points.
        return os.path.normpath(base / p)

    return table[column].map(one)


def csv_source(csv_path: str | Path, name: str | None = None) -> pd.DataFrame:
    """A CSV with path,label[,patient_id,mask_path,lesion_path,split,finding:<name>...]; paths relative
    to its folder. finding:<name> columns (1, 0, -1 or blank) make it a multi-label table."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: CSV not found; set data.root to an existing CSV file")
    check_size(csv_path, MAX_TABLE_BYTES, "a metadata table")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise ValueError(f"{csv_path}: not a readable CSV ({e})") from None
    require_columns(csv_path, table.columns, REQUIRED, "the CSV needs a header with path,label (optional: "
                    f"patient_id, mask_path, lesion_path, split); found {list(table.columns)}")
    if table.empty:
        raise ValueError(f"{csv_path}: the CSV has a header but no rows")
    empty = table.index[(table["path"] == "") | (table["label"] == "")]
    if len(empty):
        rows = ", ".join(str(i + 2) for i in empty[:5])  # +2: header line and 1-based lines
        raise ValueError(f"{csv_path}: empty path or label on line(s) {rows}; fill or remove them")
    base = csv_path.parent
    table["path"] = _resolve(table, base, "path")
    for col in OPTIONAL_PATHS:
        if col in table.columns:
            table[col] = _resolve(table, base, col)
    stems = table["path"].map(lambda p: Path(p).stem)
    if "patient_id" in table.columns:
        table["patient_id"] = table["patient_id"].where(table["patient_id"] != "", stems)
    else:
        table["patient_id"] = stems
    if "split" in table.columns:
        bad = sorted(set(table["split"]) - set(SPLITS) - {""})
        if bad:
            raise ValueError(f"{csv_path}: column split has {bad}; use train, val, test or leave empty")
        if (table["split"] == "").any():
            table = table.drop(columns="split")
    for col in (c for c in table.columns if c.startswith(PREFIX)):
        table[col] = _finding_values(table[col], csv_path)
    table["source"] = name or csv_path.parent.name
    return table


def _finding_values(column: pd.Series, csv_path: Path) -> pd.Series:
    """A finding:<name> column as 1.0 / 0.0 / -1.0 / NaN (blank); anything else is an error naming the line."""
    values = pd.to_numeric(column.replace("", math.nan), errors="coerce")
    bad = column.index[(values.isna() & (column != "")) | ~(values.isna() | values.isin(FINDING_VALUES))]
    if len(bad):
        line = int(bad[0]) + 2  # the header line and 1-based lines
        raise ValueError(
            f"{csv_path}: column {column.name} has {column[bad[0]]!r} on line {line}; use 1 (present), "
            "0 (absent), -1 (uncertain) or leave it blank (not stated)"
        )
    return values.astype(float)


def folder_source(root: str | Path, strict: bool = False) -> pd.DataFrame:
    """A class-per-folder tree: root/<label>/**/<image>; the file stem is the patient id. A class
    folder without images is named in a warning (an error under data.strict), not dropped silently."""
    root = Path(root)
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = [f for f in sorted(class_dir.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            empty = f"{class_dir}: class folder '{class_dir.name}' holds no images, so that class is left out"
            if strict:
                raise strict_error(empty)
            warnings.warn(f"{empty}; add its images or remove the folder", stacklevel=2)
        rows += [(str(f.absolute()), class_dir.name, f.stem) for f in found]
    if not rows:
        raise ValueError(
            f"{root}: no images found in class sub-folders; expected {root}/<class>/<image>.png "
            f"(suffixes {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    table = pd.DataFrame(rows, columns=["path", "label", "patient_id"])
    table["source"] = root.name
    return table


def _csv_header(path: Path) -> list[str]:
    """The first line of a CSV split on commas, lower-cased ([] if unreadable)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return [c.strip().strip('"').lower() for c in f.readline().split(",")]
    except OSError:
        return []


def _is_phantom(root: Path) -> bool:
    header = _csv_header(root / "metadata.csv")
    return "path" in header and "label" in header


@register("csv", summary="a CSV with path,label[,patient_id,mask_path,lesion_path,split]",
          folder="the CSV file itself (paths inside are relative to its folder)")
def load_csv(root: Path, options: SourceOptions) -> pd.DataFrame:
    """data.root is the CSV file."""
    if root.is_dir():
        raise ValueError(f"{root}: data.source=csv needs data.root to be the CSV file, not a folder")
    return csv_source(root)


@register("phantom", summary="the procedural phantom set (`cxrlab data phantom DIR`)",
          folder="the folder written by `cxrlab data phantom`", detect=_is_phantom)
def load_phantom(root: Path, options: SourceOptions) -> pd.DataFrame:
    """root/metadata.csv as written by the phantom generator."""
    if not (root / "metadata.csv").is_file():
        raise FileNotFoundError(
            f"{root}/metadata.csv not found; generate the set with `cxrlab data phantom {root}`"
        )
    return csv_source(root / "metadata.csv", name="phantom")


@register("folder", summary="class-per-folder tree: ROOT/<class>/**/<image>",
          folder="the folder holding one sub-folder per class")
def load_folder(root: Path, options: SourceOptions) -> pd.DataFrame:
    """Class folders; the file stem is the patient id."""
    if not root.is_dir():
        raise ValueError(f"{root}: data.source=folder needs a folder of class sub-folders")
    return folder_source(root, options.strict)
