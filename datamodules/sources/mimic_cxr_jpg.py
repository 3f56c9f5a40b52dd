"""MIMIC-CXR-JPG (PhysioNet): three gzipped tables beside files/pNN/p<subject>/s<study>/<dicom>.jpg.

mimic-cxr-2.0.0-metadata.csv.gz has one row per image (dicom_id, subject_id, study_id,
PerformedProcedureStepDescription, ViewPosition, Rows, Columns, StudyDate, StudyTime, three
*_CodeMeaning columns); ViewPosition is PA, AP, LATERAL, LL, rarer ones (AP AXIAL, LAO, ...) or
empty. mimic-cxr-2.0.0-chexpert.csv.gz labels each study (subject_id, study_id, then the 14
CheXpert observations in alphabetical order: 1.0, 0.0, -1.0 or blank); every image of a study
gets its labels, and a study without a label row is skipped. mimic-cxr-2.0.0-split.csv.gz
(dicom_id, study_id, subject_id, split: train | validate | test) is the official split. NN is the
first two digits of the subject id. The tables are also read gunzipped (.csv), and data.root may
be the version folder (2.0.0/, 2.1.0/) or the folder above it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrlab.config import MAX_TABLE_BYTES, check_size
from cxrlab.datamodules.sources.chexpert import label_value
from cxrlab.datamodules.sources.findings import finding_row
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table, require_columns

FINDINGS = (  # the label table's order (alphabetical)
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)
METADATA, LABELS, SPLIT = "mimic-cxr-2.0.0-metadata", "mimic-cxr-2.0.0-chexpert", "mimic-cxr-2.0.0-split"
VERSIONS = ("2.1.0", "2.0.0")
SPLITS = {"train": "train", "validate": "val", "test": "test"}
META_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")


def table_file(folder: Path, stem: str) -> Path | None:
    """`stem`.csv.gz, or `stem`.csv when gunzipped, if present."""
    return next((p for p in (folder / f"{stem}.csv.gz", folder / f"{stem}.csv") if p.is_file()), None)


def dataset_dir(root: Path) -> Path | None:
    """The folder holding the metadata table: root or its version sub-folder."""
    return next((d for d in (root, *(root / v for v in VERSIONS)) if table_file(d, METADATA)), None)


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A (gzipped) table as text cells, checked for `columns`."""
    table = pd.read_csv(check_size(path, MAX_TABLE_BYTES, "a MIMIC-CXR table"), dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    require_columns(path, table.columns, columns, "is this the MIMIC-CXR-JPG table?")
    return table


def image_path(folder: Path, subject: str, study: str, dicom: str) -> Path:
    """files/p10/p10000032/s50414267/<dicom_id>.jpg."""
    return folder / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"


def study_labels(folder: Path) -> dict[str, dict[str, object]]:
    """study_id -> its finding columns and summary label."""
    path = table_file(folder, LABELS)
    if path is None:
        raise FileNotFoundError(f"{folder}: no {LABELS}.csv.gz beside the metadata; download it from MIMIC-CXR-JPG")
    table = read_table(path, ("study_id", *FINDINGS))
    return {
        r["study_id"].strip(): finding_row({f: label_value(r[f]) for f in FINDINGS}, FINDINGS)
        for r in table.to_dict("records")
    }


def official_splits(folder: Path) -> dict[str, str]:
    """dicom_id -> train | val | test (empty when the split table is absent)."""
    path = table_file(folder, SPLIT)
    if path is None:
        return {}
    table = read_table(path, ("dicom_id", "split"))
    return {d.strip(): SPLITS.get(s.strip(), "") for d, s in zip(table["dicom_id"], table["split"], strict=True)}


def view_skip(view: str, options: SourceOptions) -> str:
    """Why an image of this ViewPosition cannot be used ('' when it can)."""
    if not view:
        return "ViewPosition is empty in the metadata (view unknown)"
    return "" if options.view_allowed(view) else f"view {view} is not in data.views {list(options.views)}"


@register(
    "mimic_cxr_jpg",
    summary="MIMIC-CXR-JPG (14 CheXpert observations per study, multi-label; -1 = uncertain)",
    folder="mimic-cxr-jpg/2.0.0/ (holds mimic-cxr-2.0.0-*.csv.gz and files/)",
    detect=lambda root: dataset_dir(root) is not None,
    official_split=True,
    findings=FINDINGS,
)
def load_mimic_cxr_jpg(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per image of the metadata, labelled by its study; unusable views are skipped."""
    folder = dataset_dir(root)
    meta_path = table_file(folder, METADATA) if folder is not None else None
    if folder is None or meta_path is None:
        raise FileNotFoundError(f"{root}: no {METADATA}.csv.gz; point data.root at mimic-cxr-jpg/2.0.0/")
    meta = read_table(meta_path, META_COLUMNS)
    labels, splits = study_labels(folder), official_splits(folder)
    rows = []
    for r in meta.to_dict("records"):
        subject, study, dicom = r["subject_id"].strip(), r["study_id"].strip(), r["dicom_id"].strip()
        view = r["ViewPosition"].strip()
        findings = dict(labels.get(study) or finding_row({}, FINDINGS))
        skip = view_skip(view, options)
        if study not in labels and not skip:
            skip = f"study s{study} has no row in {LABELS}.csv.gz"
        rows.append({
            "path": str(image_path(folder, subject, study, dicom).absolute()),
            "label": findings.pop("label"),
            "patient_id": subject,
            "study_id": study,
            "view": view,
            "official_split": splits.get(dicom, ""),
            **findings,
            "skip": skip,
        })
    return make_table(rows, "mimic_cxr_jpg", root)
