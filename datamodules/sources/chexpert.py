"""CheXpert (Stanford): CheXpert-v1.0-small/ (or the full CheXpert-v1.0/) with train.csv, valid.csv.

Columns: Path, Sex, Age, Frontal/Lateral, AP/PA, then the 14 observations (No Finding first).
A label cell is 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned: NaN);
valid.csv has no blanks or -1. `Path` starts with the dataset folder's own name
(CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg), so it is taken relative to
the folder above the dataset folder (a renamed dataset folder still works: the first part is
replaced by it). AP/PA is blank on lateral rows; their view is "Lateral", which data.views
leaves out by default. train.csv is the official train split, valid.csv the val split.
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath

import pandas as pd

from cxrlab.config import MAX_TABLE_BYTES, check_size
from cxrlab.datamodules.sources.findings import finding_row
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table, require_columns, stem_patient

FINDINGS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
NAMES = ("CheXpert-v1.0-small", "CheXpert-v1.0")
TABLES = {"train.csv": "train", "valid.csv": "val"}
COLUMNS = ("Path", "Frontal/Lateral", "AP/PA", *FINDINGS)
_PATIENT = re.compile(r"(patient\d+)")


def label_value(text: str) -> float:
    """'1.0' -> 1.0, '-1.0' -> -1.0 (uncertain), '' -> NaN (not mentioned)."""
    text = str(text).strip()
    try:
        return float(text) if text else math.nan
    except ValueError:
        raise ValueError(f"label cell {text!r} is not 1.0, 0.0, -1.0 or blank") from None


def _is_table(path: Path) -> bool:
    """Whether `path` is a CheXpert label table (its header, read from the first line)."""
    if not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as f:
        header = [c.strip() for c in f.readline().split(",")]
    return "Path" in header and "Frontal/Lateral" in header


def dataset_dir(root: Path, header: bool = True) -> Path | None:
    """The folder holding train.csv: root itself or its CheXpert-v1.0-small/ or CheXpert-v1.0/
    (with header=False, any train.csv: a table that lost a column is then named by read_labels)."""
    folders = (root, *(root / n for n in NAMES))
    return next((d for d in folders if (_is_table if header else Path.is_file)(d / "train.csv")), None)


def image_path(folder: Path, path: str) -> Path:
    """`Path` with its first part (the dataset folder's name as released) replaced by `folder`."""
    parts = PurePosixPath(path.strip().replace("\\", "/")).parts
    if parts and parts[0].startswith("CheXpert"):
        parts = parts[1:]
    return folder.joinpath(*parts)


def chexpert_patient(path: str) -> str:
    """.../train/patient00001/study1/view1_frontal.jpg -> patient00001."""
    m = _PATIENT.search(path)
    return m.group(1) if m else stem_patient(path)


def chexpert_view(frontal_lateral: str, ap_pa: str) -> str:
    """AP/PA (LL, RL) for a frontal image, 'Lateral' for a lateral one."""
    return "Lateral" if frontal_lateral.strip().lower() == "lateral" else ap_pa.strip()


def read_labels(path: Path) -> pd.DataFrame:
    """One CheXpert table as text cells (blanks kept as '')."""
    table = pd.read_csv(check_size(path, MAX_TABLE_BYTES, "a label table"), dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    require_columns(path, table.columns, COLUMNS, "is this CheXpert's train.csv?")
    return table


@register(
    "chexpert",
    summary="CheXpert (14 observations incl. No Finding, multi-label; -1 = uncertain, blank = not mentioned)",
    folder="CheXpert-v1.0-small/ or CheXpert-v1.0/ (holds train.csv, valid.csv, train/, valid/), or its parent",
    detect=lambda root: dataset_dir(root) is not None,
    official_split=True,
    findings=FINDINGS,
)
def load_chexpert(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per table row; views outside data.views (Lateral by default) are skipped."""
    folder = dataset_dir(root, header=False)
    if folder is None:
        raise FileNotFoundError(f"{root}: no CheXpert train.csv; point data.root at CheXpert-v1.0-small/")
    rows = []
    for name, split in TABLES.items():
        if not (folder / name).is_file():
            continue
        for r in read_labels(folder / name).to_dict("records"):
            view = chexpert_view(r["Frontal/Lateral"], r["AP/PA"])
            findings = finding_row({f: label_value(r[f]) for f in FINDINGS}, FINDINGS)
            rows.append({
                "path": str(image_path(folder, r["Path"]).absolute()),
                "label": findings.pop("label"),
                "patient_id": chexpert_patient(r["Path"]),
                "view": view,
                "official_split": split,
                **findings,
                "skip": f"view {view} is not in data.views {list(options.views)}"
                if view and not options.view_allowed(view) else "",
            })
    return make_table(rows, "chexpert", root)
