"""Dataset adapters: each turns a dataset on disk into the sample table of DESIGN.md.

Sample table columns: path, label, patient_id, source (+ optional mask_path, lesion_path, split).
Paths are absolute. Everything downstream (splits, balancing, loaders) only sees this table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from datamodules.images import IMAGE_SUFFIXES

REQUIRED = ("path", "label")
OPTIONAL_PATHS = ("mask_path", "lesion_path")
SPLITS = ("train", "val", "test")


def _resolve(table: pd.DataFrame, base: Path, column: str) -> pd.Series:
    """Absolute paths; relative ones are taken relative to `base`."""
    def one(p: object) -> object:
        if not isinstance(p, str) or not p:
            return None
        path = Path(p)
        return str(path if path.is_absolute() else (base / path).resolve())

    return table[column].map(one)


def csv_source(csv_path: str | Path, name: str | None = None) -> pd.DataFrame:
    """A CSV with path,label[,patient_id,mask_path,lesion_path,split]; paths relative to its folder."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: CSV not found; set data.root to an existing CSV file")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise ValueError(f"{csv_path}: not a readable CSV ({e})") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; the CSV needs a header with "
            f"path,label (optional: patient_id, mask_path, lesion_path, split); found {list(table.columns)}"
        )
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
    # Without a patient id an image is its own patient (grouping cannot then prevent leakage).
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
    table["source"] = name or csv_path.parent.name
    return table


def folder_source(root: str | Path) -> pd.DataFrame:
    """A class-per-folder tree: root/<label>/**/<image>; the file stem is the patient id."""
    root = Path(root)
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(class_dir.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                rows.append((str(f.resolve()), class_dir.name, f.stem))
    if not rows:
        raise ValueError(
            f"{root}: no images found in class sub-folders; expected {root}/<class>/<image>.png "
            f"(suffixes {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    table = pd.DataFrame(rows, columns=["path", "label", "patient_id"])
    table["source"] = root.name
    return table


def detect_source(root: Path) -> str:
    """Guess the adapter for a root: csv file, phantom/CSV folder, or class folders."""
    if root.is_file():
        return "csv"
    if (root / "metadata.csv").is_file():
        return "phantom"
    return "folder"


def load_table(source: str, root: str | Path | None) -> pd.DataFrame:
    """The sample table for a data.source / data.root pair."""
    if root is None:
        raise ValueError(
            "data.root is not set; point it at a dataset (e.g. --data.root data/phantom after "
            "`cxrlab data phantom data/phantom`)"
        )
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"{root}: data.root does not exist; generate a phantom set with "
            f"`cxrlab data phantom {root}` or point data.root at your dataset"
        )
    kind = detect_source(root) if source == "auto" else source
    if kind == "csv":
        if root.is_dir():
            raise ValueError(f"{root}: data.source=csv needs data.root to be the CSV file, not a folder")
        return csv_source(root)
    if kind == "phantom":
        if not (root / "metadata.csv").is_file():
            raise FileNotFoundError(
                f"{root}/metadata.csv not found; generate the set with `cxrlab data phantom {root}`"
            )
        return csv_source(root / "metadata.csv", name="phantom")
    if kind == "folder":
        if not root.is_dir():
            raise ValueError(f"{root}: data.source=folder needs a folder of class sub-folders")
        return folder_source(root)
    raise ValueError(f"data.source={source!r}; choose auto, phantom, folder or csv")


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
