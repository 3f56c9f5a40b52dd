"""PadChest (BIMCV, Hospital San Juan de Alicante): one metadata CSV and 16-bit PNGs in 0/ .. 54/.

The root holds PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv (or its .csv.gz), whose
first column is an unnamed pandas index, and the unzipped image folders: an image is
<ImageDir>/<ImageID>, ImageDir an integer folder 0..54 (a flat copy with every PNG in the root,
as torchxrayvision reads it, works too). Quirks:

- `Labels` is a Python list written as text ("['pneumonia', ' pleural effusion']"): entries
  carry stray spaces and mixed case ('COPD signs'); a few rows are blank, "[]" or "['']". Rows
  with no label at all (not even 'normal') are skipped rather than called normal, and so are
  rows labelled 'exclude' (the annotators set the image aside).
- `Projection` is PA, AP, AP_horizontal (a supine AP: read as 'AP Supine', as torchxrayvision
  does), L, COSTAL (rib views), EXCLUDE; views outside data.views are skipped with their reason.
- Some images of the download are missing or unreadable; BROKEN_IMAGES lists the ones
  torchxrayvision's PadChest loader documents, and those rows are skipped by id.
- `MethodLabel` says who labelled the report: 'Physician' (about a quarter) or 'RNN_model'; it
  is kept as the column `label_method`.

Findings: the torchxrayvision subset (FINDINGS). PadChest's ~190 lowercase terms map to them by
whole words: a finding's own name ('pleural effusion' holds 'effusion') or one of its SYNONYMS,
a trailing plural 's' allowed ('multiple nodules' -> Nodule). Unlike torchxrayvision's substring
match, 'pseudonodule' is not a Nodule, and the terms in NOT_FINDINGS (pericardial effusion,
subcutaneous emphysema, breast and soft tissue masses) map to nothing: they are not the
lung/pleura findings the names mean elsewhere (NIH, CheXpert). Every finding a row's labels do
not name is 0.0, so 'normal' (and 'unchanged') rows are negative for all. PadChest states no
uncertainty, so no finding is ever -1.0 or NaN.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import pandas as pd

from cxrlab.config import MAX_TABLE_BYTES, check_size
from cxrlab.datamodules.sources.findings import POSITIVE, finding_row
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table, require_columns

CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
CSV_NAMES = (CSV_NAME, f"{CSV_NAME}.gz")
COLUMNS = ("ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "MethodLabel", "Labels")

FINDINGS = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
    "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia",
    "Fracture", "Granuloma", "Flattened Diaphragm", "Bronchiectasis", "Aortic Elongation",
    "Scoliosis", "Hilar Enlargement", "Tuberculosis", "Air Trapping", "Costophrenic Angle Blunting",
    "Aortic Atheromatosis", "Hemidiaphragm Elevation",
)
# PadChest terms that stand for a finding without containing its name (torchxrayvision's mapping).
SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "Infiltration": ("infiltrates", "interstitial pattern", "ground glass pattern", "alveolar pattern",
                     "consolidation", "air bronchogram"),
    "Consolidation": ("air bronchogram",),
    "Hilar Enlargement": ("adenopathy", "pulmonary artery enlargement"),
    "Pneumothorax": ("hydropneumothorax",),
}
NOT_FINDINGS = frozenset({"pericardial effusion", "subcutaneous emphysema", "breast mass", "soft tissue mass"})
EXCLUDE_LABEL = "exclude"
VIEWS = {"AP_horizontal": "AP Supine"}  # Projection -> the view name data.views uses

# Image files of the download that are missing or cannot be decoded (truncated, broken PNG
# chunks), as listed in torchxrayvision's PadChest loader (PC_Dataset).
BROKEN_IMAGES = frozenset({
    "216840111366964012819207061112010307142602253_04-014-084.png",
    "216840111366964012989926673512011074122523403_00-163-058.png",
    "216840111366964012959786098432011033083840143_00-176-115.png",
    "216840111366964012558082906712009327122220177_00-102-064.png",
    "216840111366964012339356563862009072111404053_00-043-192.png",
    "216840111366964013076187734852011291090445391_00-196-188.png",
    "216840111366964012373310883942009117084022290_00-064-025.png",
    "216840111366964012283393834152009033102258826_00-059-087.png",
    "216840111366964012373310883942009170084120009_00-097-074.png",
    "216840111366964012819207061112010315104455352_04-024-184.png",
    "216840111366964012819207061112010306085429121_04-020-102.png",
    "216840111366964012989926673512011083134050913_00-168-009.png",
    "216840111366964012373310883942009152114636712_00-102-045.png",
    "216840111366964012819207061112010281134410801_00-129-131.png",
    "216840111366964012487858717522009280135853083_00-075-001.png",
    "216840111366964012989926673512011151082430686_00-157-045.png",
    "216840111366964013686042548532013208193054515_02-026-007.png",
    "216840111366964013590140476722013058110301622_02-056-111.png",
    "216840111366964013590140476722013043111952381_02-065-198.png",
    "216840111366964013829543166512013353113303615_02-092-190.png",
    "216840111366964013962490064942014134093945580_01-178-104.png",
})


def _terms_pattern(finding: str) -> re.Pattern[str]:
    """Whole-word match of the finding's name or synonyms, plural 's' allowed."""
    terms = (finding.lower().replace("_", " "), *SYNONYMS.get(finding, ()))
    return re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")s?\b")


_PATTERNS = {f: _terms_pattern(f) for f in FINDINGS}


@lru_cache(maxsize=4096)
def term_findings(term: str) -> frozenset[str]:
    """The findings one lowercase PadChest term stands for ('loculated pleural effusion' -> Effusion)."""
    if term in NOT_FINDINGS:
        return frozenset()
    return frozenset(f for f, p in _PATTERNS.items() if p.search(term))


def parse_labels(text: str) -> list[str] | None:
    """"['Pneumonia', ' pleural effusion']" -> ['pneumonia', 'pleural effusion']; None if not a list."""
    text = text.strip()
    if not text or text.lower() == "nan":
        return None
    try:
        value = ast.literal_eval(text)  # literals only: never evaluates code
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list | tuple):
        return None
    return [s for s in (str(v).strip().lower() for v in value) if s]


@lru_cache(maxsize=65536)
def _label_values(text: str) -> tuple[tuple[tuple[str, float], ...], str]:
    """(finding values, skip reason) of one Labels cell; cached (the same lists recur)."""
    terms = parse_labels(text)
    if terms is None:
        return (), f"Labels {text.strip()!r} is not a list of labels" if text.strip() else "Labels is blank"
    if not terms:
        return (), f"Labels {text.strip()!r} names no label (not even 'normal')"
    if EXCLUDE_LABEL in terms:
        return (), "labelled 'exclude' (set aside by the annotators)"
    positive = set().union(*(term_findings(t) for t in terms))
    return tuple((f, POSITIVE if f in positive else 0.0) for f in FINDINGS), ""


def csv_path(root: Path) -> Path | None:
    """The metadata CSV (plain or gzipped) in `root`, looked up by name."""
    return next((root / n for n in CSV_NAMES if (root / n).is_file()), None)


def padchest_view(projection: str) -> str:
    """Projection -> view: AP_horizontal is a supine AP; the others keep their name."""
    projection = projection.strip()
    return VIEWS.get(projection, projection)


def _image_dir(value: str) -> str:
    """ImageDir as its folder name ('7', also when pandas wrote '7.0')."""
    value = value.strip()
    try:
        return str(int(float(value)))
    except ValueError:
        return value


def _skip(image_id: str, view: str, reason: str, options: SourceOptions) -> str:
    """The first reason a row cannot be used, or ''."""
    if image_id in BROKEN_IMAGES:
        return f"image {image_id} is missing or unreadable in the PadChest download (known broken)"
    if not view:
        return "no Projection recorded (a lateral view cannot be ruled out)"
    if not options.view_allowed(view):
        return f"view {view} is not in data.views {list(options.views)}"
    return reason


@register(
    "padchest",
    summary="PadChest (multi-label: 26 findings mapped from its report labels; 16-bit PNG)",
    folder="the folder holding PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz] and 0/ .. 54/",
    detect=lambda root: csv_path(root) is not None,
    findings=FINDINGS,
)
def load_padchest(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per CSV row; broken images, excluded views and unlabelled reports carry a skip reason."""
    meta = csv_path(root)
    if meta is None:
        raise FileNotFoundError(f"{root}: no {CSV_NAME}[.gz]; point data.root at the PadChest folder")
    header = pd.read_csv(check_size(meta, MAX_TABLE_BYTES, "a metadata table"), nrows=0).columns
    require_columns(meta, header, COLUMNS, "is this PadChest's label CSV?")
    table = pd.read_csv(meta, usecols=list(COLUMNS), dtype=str, keep_default_na=False)
    folders: dict[str, Path] = {}  # ImageDir -> its folder (the root for a flat copy)
    rows = []
    for r in table.to_dict("records"):
        image_id, d = r["ImageID"].strip(), _image_dir(r["ImageDir"])
        if d not in folders:
            folders[d] = root / d if d and (root / d).is_dir() else root
        view = padchest_view(r["Projection"])
        values, reason = _label_values(r["Labels"])
        rows.append({
            "path": str((folders[d] / image_id).absolute()),
            **finding_row(dict(values), FINDINGS),
            "patient_id": r["PatientID"].strip() or Path(image_id).stem,
            "study_id": r["StudyID"].strip(),
            "view": view,
            "label_method": r["MethodLabel"].strip(),
            "skip": _skip(image_id, view, reason, options),
        })
    return make_table(rows, "padchest", root)
