"""RSNA Pneumonia Detection Challenge (Kaggle): label CSVs and one DICOM per patientId.

The root (rsna-pneumonia-detection-challenge/ as unzipped) holds stage_2_train_labels.csv
(patientId,x,y,width,height,Target), stage_2_detailed_class_info.csv (patientId,class) and
stage_2_train_images/<patientId>.dcm; the stage 1 names (stage_1_*) are read when stage 2's are
absent. stage_2_test_images/ has no labels and is never read. Quirks:

- One CSV row per box: a patient with three opacities has three rows; Target 0 rows leave
  x..height blank. The detailed class repeats once per box row too.
- Each patientId is one image (one frontal CXR), so patient grouping is per image.
- Boxes are in the 1024 x 1024 image's pixels; they go to `lesion_boxes` as
  [[x, y, w, h], ...], "[]" for an image that was read and has none.

Findings: `Lung Opacity` only (1.0 for Target 1, else 0.0). The detailed class ('Lung Opacity',
'No Lung Opacity / Not Normal', 'Normal') is the column `detail`, not a second finding: its
classes exclude each other and 'Not Normal' is a catch-all of anything else abnormal, not a
finding of its own (map on `detail` to train on it). `view` (PA or AP) is the DICOM header's
ViewPosition, read without the pixels (about 0.4 ms an image, some 10 s for the 26,684 train
images on a warm disk; empty if unreadable or without pydicom), so data.views filters it and the
AP-vs-PA shortcut (most opacities are on AP films) can be studied.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from cxrlab.config import MAX_TABLE_BYTES, check_size
from cxrlab.datamodules.sources.findings import BOXES, NEGATIVE, POSITIVE, finding_row
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table, require_columns

LUNG_OPACITY = "Lung Opacity"
FINDINGS = (LUNG_OPACITY,)
STAGES = ("stage_2", "stage_1")
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
BOX_COLUMNS = ("x", "y", "width", "height")


def stage(root: Path) -> str | None:
    """The newest stage whose train labels CSV is in `root` (a lookup by name)."""
    return next((s for s in STAGES if (root / f"{s}_train_labels.csv").is_file()), None)


def _number(text: str) -> float | int:
    """'264.0' -> 264 (whole numbers as ints), '10.5' -> 10.5."""
    value = float(text)
    return int(value) if value.is_integer() else value


def box(row: dict[str, str]) -> list[float | int] | None:
    """[x, y, w, h] of one label row; None when blank (a Target 0 row) or not numbers."""
    try:
        values = [_number(row[c]) for c in BOX_COLUMNS]
    except (ValueError, TypeError):
        return None
    return None if any(math.isnan(v) for v in values) else values


def dicom_view(path: Path) -> str:
    """ViewPosition from the DICOM header (pixels never read); '' when absent or unreadable."""
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["ViewPosition"])
    except Exception:  # missing, truncated or not DICOM: the decoder names the problem later
        return ""
    return str(ds.get("ViewPosition", "") or "").strip()


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A label CSV as text, refused when a column is missing."""
    table = pd.read_csv(check_size(path, MAX_TABLE_BYTES, "a label table"), dtype=str, keep_default_na=False)
    require_columns(path, table.columns, columns, "is this the RSNA pneumonia CSV?")
    return table


def patients(labels: pd.DataFrame) -> dict[str, tuple[set[str], list[list[float | int]]]]:
    """patientId -> (its Target values, its boxes), in first-appearance order."""
    out: dict[str, tuple[set[str], list[list[float | int]]]] = {}
    for r in labels.to_dict("records"):
        targets, boxes = out.setdefault(r["patientId"].strip(), (set(), []))
        targets.add(r["Target"].strip())
        if r["Target"].strip() == "1" and (b := box(r)) is not None:
            boxes.append(b)
    return out


def _value(targets: set[str]) -> tuple[float, str]:
    """(Lung Opacity value, skip reason) of a patient's Target values."""
    if targets == {"1"}:
        return POSITIVE, ""
    if targets == {"0"}:
        return NEGATIVE, ""
    return math.nan, f"Target {sorted(targets)} is not one 0 or 1"


def _skip(view: str, reason: str, options: SourceOptions) -> str:
    """The first reason a row cannot be used, or ''."""
    if view and not options.view_allowed(view):
        return f"view {view} is not in data.views {list(options.views)}"
    return reason


@register(
    "rsna_pneumonia",
    summary="RSNA Pneumonia Detection (multi-label: Lung Opacity with boxes; DICOM)",
    folder="rsna-pneumonia-detection-challenge/ (holds stage_2_train_labels.csv and stage_2_train_images/)",
    detect=lambda root: stage(root) is not None,
    findings=FINDINGS,
)
def load_rsna_pneumonia(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per patientId of the train labels; boxes joined, detailed class as `detail`."""
    s = stage(root)
    if s is None:
        raise FileNotFoundError(f"{root}: no stage_2_train_labels.csv; point data.root at the RSNA challenge folder")
    images = root / f"{s}_train_images"
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: the train images folder is missing; unzip {s}_train_images.zip here")
    detail_csv = root / f"{s}_detailed_class_info.csv"
    details: dict[str, str] = {}
    if detail_csv.is_file():
        for r in _read(detail_csv, ("patientId", "class")).to_dict("records"):
            details.setdefault(r["patientId"].strip(), r["class"].strip())
    rows = []
    for pid, (targets, boxes) in patients(_read(root / f"{s}_train_labels.csv", LABEL_COLUMNS)).items():
        path = images / f"{pid}.dcm"
        view = dicom_view(path)
        value, reason = _value(targets)
        rows.append({
            "path": str(path.absolute()),
            **finding_row({LUNG_OPACITY: value}, FINDINGS),
            "patient_id": pid,
            BOXES: json.dumps(boxes),
            "detail": details.get(pid, ""),
            "view": view,
            "skip": _skip(view, reason, options),
        })
    return make_table(rows, "rsna_pneumonia", root)
