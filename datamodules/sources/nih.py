"""NIH ChestX-ray14: Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv) + images_NNN/images/*.png.

Data entry columns: Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age, Patient
Gender, View Position, OriginalImage[Width,Height], OriginalImagePixelSpacing[x,y]. The bracketed
headers hold commas, so pandas splits each into two columns, and the 2017 file ends every line
with a comma (a trailing unnamed empty column); only the named columns before them are read.
`Finding Labels` joins the 14 findings with "|"; "No Finding" means all 14 are absent.
The Kaggle download spreads the images over images_001/images/ .. images_012/images/, the NIH
tarballs unpack into one images/; a name -> file index is built from those folders only.
train_val_list.txt and test_list.txt (one image name a line) are the official split.
BBox_List_2017.csv (~1k boxes) has the header `Image Index,Finding Label,Bbox [x,y,w,h],,,`: x, y,
w, h are the 3rd to 6th fields whatever pandas names them, so they are read by position. Each box
keeps its finding (the file spells Infiltration "Infiltrate"), so a map of one finding is scored
against that finding's boxes only.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from cxrlab.config import MAX_TABLE_BYTES, check_size
from cxrlab.datamodules.sources.findings import BOXES, NEGATIVE, NO_FINDING, POSITIVE, finding_row
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table, require_columns

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
ENTRIES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # the corrected 2020 file first
BOXES_FILE = "BBox_List_2017.csv"
BOX_FINDINGS = {"Infiltrate": "Infiltration"}  # the box file's spelling -> the data entry's
SPLIT_FILES = {"train_val_list.txt": "train", "test_list.txt": "test"}
COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
IMAGE_FOLDERS = 12  # images_001 .. images_012


def entry_file(root: Path) -> Path | None:
    """The data entry table of `root` (looked up by its known names)."""
    return next((root / n for n in ENTRIES if (root / n).is_file()), None)


def image_folders(root: Path) -> list[Path]:
    """The existing image folders: images_NNN/images/ (Kaggle), images_NNN/ and images/ (NIH)."""
    candidates = [root / f"images_{i:03d}" / sub for i in range(1, IMAGE_FOLDERS + 1) for sub in ("images", "")]
    return [d for d in (*candidates, root / "images") if d.is_dir()]


def image_index(root: Path) -> dict[str, Path]:
    """Image file name -> its path, over the image folders (the first folder holding a name wins)."""
    index: dict[str, Path] = {}
    for folder in image_folders(root):
        for f in folder.iterdir():
            if f.suffix.lower() == ".png" and not f.name.startswith("."):
                index.setdefault(f.name, f)
    return index


def official_splits(root: Path) -> dict[str, str]:
    """Image name -> train | test, from train_val_list.txt and test_list.txt (empty when absent)."""
    out: dict[str, str] = {}
    for name, split in SPLIT_FILES.items():
        path = root / name
        if path.is_file():
            text = check_size(path, MAX_TABLE_BYTES, "a split list").read_text()
            out.update((line.strip(), split) for line in text.splitlines() if line.strip())
    return out


def read_boxes(root: Path) -> dict[str, list[list[float | str]]]:
    """Image name -> its [x, y, w, h, finding] boxes from BBox_List_2017.csv (empty when absent)."""
    path = root / BOXES_FILE
    if not path.is_file():
        return {}
    text = check_size(path, MAX_TABLE_BYTES, "a box list").read_text(encoding="utf-8", errors="replace")
    out: dict[str, list[list[float | str]]] = {}
    for r in list(csv.reader(text.splitlines()))[1:]:
        if len(r) >= 6 and r[0].strip():
            finding = BOX_FINDINGS.get(r[1].strip(), r[1].strip())
            out.setdefault(r[0].strip(), []).append([*(float(v) for v in r[2:6]), finding])
    return out


def nih_patient(name: str) -> str:
    """00000013_005.png -> 13, as the Patient ID column writes it."""
    return name.split("_")[0].lstrip("0") or "0"


def finding_values(labels: str) -> tuple[dict[str, float], list[str]]:
    """(finding -> 1.0/0.0 for all 14, unknown names) of one `Finding Labels` cell."""
    named = {n.strip() for n in labels.split("|") if n.strip()} - {NO_FINDING}
    values = {f: POSITIVE if f in named else NEGATIVE for f in FINDINGS}
    return values, sorted(named - set(FINDINGS))


def read_entries(path: Path) -> pd.DataFrame:
    """The data entry table's named columns (the trailing unnamed one of the 2017 file dropped)."""
    table = pd.read_csv(check_size(path, MAX_TABLE_BYTES, "a data entry table"), dtype=str, keep_default_na=False)
    table = table.loc[:, [not c.startswith("Unnamed") for c in table.columns]]
    table.columns = [c.strip() for c in table.columns]
    require_columns(path, table.columns, COLUMNS, "is this NIH's Data_Entry_2017.csv?")
    return table


@register(
    "nih",
    summary="NIH ChestX-ray14 (14 findings, multi-label; 984 boxes on 880 images)",
    folder="the folder holding Data_Entry_2017.csv and images_001/ .. images_012/ (or images/)",
    detect=lambda root: entry_file(root) is not None,
    official_split=True,
    findings=FINDINGS,
)
def load_nih(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per data entry; a missing image, an excluded view or an unknown finding is skipped."""
    entries = entry_file(root)
    if entries is None:
        raise FileNotFoundError(f"{root}: no {' or '.join(ENTRIES)}; point data.root at the NIH download")
    table = read_entries(entries)
    images, splits, boxes = image_index(root), official_splits(root), read_boxes(root)
    rows = []
    for r in table.to_dict("records"):
        name, view = r["Image Index"].strip(), r["View Position"].strip()
        values, unknown = finding_values(r["Finding Labels"])
        found = images.get(name)
        if found is None:
            skip = "image not found under images_NNN/images/ or images/"
        elif view and not options.view_allowed(view):
            skip = f"view {view} is not in data.views {list(options.views)}"
        elif unknown:
            skip = f"finding(s) {unknown} are not NIH findings"
        else:
            skip = ""
        findings = finding_row(values, FINDINGS)
        rows.append({
            "path": str((found or root / "images" / name).absolute()),
            "label": findings.pop("label"),
            "patient_id": r["Patient ID"].strip() or nih_patient(name),
            "view": view,
            "official_split": splits.get(name, ""),
            BOXES: json.dumps(boxes[name]) if name in boxes else None,
            **findings,
            "skip": skip,
        })
    return make_table(rows, "nih", root)
