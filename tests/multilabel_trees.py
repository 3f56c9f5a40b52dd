"""Tiny copies of the multi-label CXR benchmarks as they unpack: NIH ChestX-ray14, CheXpert and
MIMIC-CXR-JPG, with their real file names, column names and quirks.

Each writer builds a tree under a folder and returns what data.root must point at. The expected
per-finding counts (*_POSITIVES, *_UNCERTAIN) are computed here from the row definitions alone,
over the rows the adapter must keep with the default data.views, never from an adapter's output.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pandas as pd
from dataset_trees import write_image

# --------------------------------------------------------------------------- NIH ChestX-ray14

NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
# (image name, Finding Labels, View Position); the patient is the name's first 8 digits.
NIH_ROWS = [
    ("00000001_000.png", "Cardiomegaly", "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", "PA"),
    ("00000001_002.png", "Cardiomegaly|Effusion", "PA"),
    ("00000002_000.png", "No Finding", "PA"),
    ("00000003_000.png", "Hernia", "PA"),
    ("00000003_001.png", "Hernia|Infiltration", "AP"),
    ("00000003_002.png", "No Finding", "AP"),
    ("00000004_000.png", "Mass|Nodule", "AP"),
    ("00000005_000.png", "No Finding", "PA"),
    ("00000005_001.png", "Atelectasis", "PA"),
    ("00000005_002.png", "Atelectasis|Effusion|Infiltration", "AP"),
    ("00000006_000.png", "No Finding", "PA"),
    ("00000007_000.png", "Pneumothorax", "PA"),
    ("00000008_000.png", "Consolidation|Pneumonia", "AP"),
    ("00000008_001.png", "Edema|Pleural_Thickening", "AP"),
    ("00000009_000.png", "Fibrosis", "PA"),
    ("00000010_000.png", "No Finding", "PA"),
    ("00000010_001.png", "Effusion|Pneumothorax", "PA"),
    ("00000011_000.png", "Nodule", "PA"),
    ("00000011_001.png", "No Finding", "PA"),
    ("00000012_000.png", "Atelectasis|Cardiomegaly|Effusion|Mass", "AP"),
    ("00000013_000.png", "Infiltration", "PA"),  # listed, but its image was never downloaded
]
NIH_MISSING = {"00000013_000.png"}
NIH_TEST_PATIENTS = {"10", "11", "12", "13"}  # test_list.txt; the rest are in train_val_list.txt
# (image name, Finding Label as the box file spells it, x, y, w, h); two boxes on one image.
NIH_BOXES = [
    ("00000001_000.png", "Cardiomegaly", 10.5, 20.25, 30.0, 24.75),
    ("00000005_002.png", "Atelectasis", 4.0, 8.0, 12.0, 10.0),
    ("00000005_002.png", "Infiltrate", 33.898305084746, 12.5, 20.0, 18.0),  # sic: not Infiltration
    ("00000012_000.png", "Mass", 40.0, 36.0, 8.5, 9.25),
]


def nih_patient(name: str) -> str:
    """The Patient ID column's value for an image name (no zero padding)."""
    return str(int(name.split("_")[0]))


def nih_folder(i: int) -> str:
    """The Kaggle folder of the i-th image: the first half in images_001, the rest in images_002."""
    return "images_001" if i < len(NIH_ROWS) // 2 else "images_002"


NIH_KEPT = [r for r in NIH_ROWS if r[0] not in NIH_MISSING]
NIH_POSITIVES = {f: sum(f in labels.split("|") for _, labels, _ in NIH_KEPT) for f in NIH_FINDINGS}


def write_nih(base: Path, version: str = "2017") -> Path:
    """Data_Entry_2017.csv (trailing comma on every line) or, with version='2020',
    Data_Entry_2017_v2020.csv (none); images over images_001/images and images_002/images,
    BBox_List_2017.csv, train_val_list.txt, test_list.txt and README_CHESTXRAY.pdf. Returns base."""
    base.mkdir(parents=True, exist_ok=True)
    tail = "," if version == "2017" else ""
    name = "Data_Entry_2017.csv" if version == "2017" else "Data_Entry_2017_v2020.csv"
    lines = [NIH_HEADER + tail]
    for i, (image, labels, view) in enumerate(NIH_ROWS):
        follow = int(image[9:12])
        lines.append(f"{image},{labels},{follow},{nih_patient(image)},{40 + i},{'MF'[i % 2]},{view},"
                     f"2500,2048,0.143,0.143{tail}")
        if image not in NIH_MISSING:
            write_image(base / nih_folder(i) / "images" / image, labels.split("|")[0].lower(), 500 + i)
    (base / name).write_text("\n".join(lines) + "\n")
    with (base / "BBox_List_2017.csv").open("w", newline="") as f:
        f.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        w = csv.writer(f)
        for k, row in enumerate(NIH_BOXES):
            w.writerow([*row, "", "", ""] if k == len(NIH_BOXES) - 1 else row)  # the last with trailing empties
    test = [r[0] for r in NIH_ROWS if nih_patient(r[0]) in NIH_TEST_PATIENTS]
    (base / "test_list.txt").write_text("\n".join(test) + "\n")
    (base / "train_val_list.txt").write_text("\n".join(r[0] for r in NIH_ROWS if r[0] not in test) + "\n")
    (base / "README_CHESTXRAY.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    return base


# --------------------------------------------------------------------------- CheXpert

CHEXPERT_FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                     "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                     "Pleural Other", "Fracture", "Support Devices")
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS]
CHEXPERT_DIR = "CheXpert-v1.0-small"
_CELL = {"1": "1.0", "0": "0.0", "u": "-1.0", ".": ""}  # one character a finding, in CHEXPERT_FINDINGS order
# (table, patient, study, view file, Frontal/Lateral, AP/PA, 14 label characters: 1 0 u(ncertain) .(blank))
CHEXPERT_ROWS = [
    ("train", "patient00001", 1, "view1_frontal", "Frontal", "AP", "1............1"),
    ("train", "patient00002", 2, "view1_frontal", "Frontal", "AP", "....u.....u..."),
    ("train", "patient00002", 1, "view1_frontal", "Frontal", "AP", "...1.....u1..."),
    ("train", "patient00002", 1, "view2_lateral", "Lateral", "", "...1.....u1..."),
    ("train", "patient00003", 1, "view1_frontal", "Frontal", "AP", "...1.1...0...."),
    ("train", "patient00004", 1, "view1_frontal", "Frontal", "PA", "1.0..........."),
    ("train", "patient00004", 1, "view2_frontal", "Frontal", "PA", "1.0..........."),
    ("train", "patient00005", 1, "view1_frontal", "Frontal", "AP", ".u1........u.1"),
    ("train", "patient00005", 2, "view1_frontal", "Frontal", "AP", "..1u......1..1"),
    ("train", "patient00005", 2, "view2_lateral", "Lateral", "", "..1u......1..1"),
    ("train", "patient00006", 1, "view1_frontal", "Frontal", "PA", "0..1...1......"),
    ("train", "patient00007", 1, "view1_frontal", "Frontal", "AP", ".....1u.uu1..1"),
    ("train", "patient00008", 1, "view1_frontal", "Frontal", "PA", "...1.......u1."),
    ("train", "patient00008", 2, "view1_frontal", "Frontal", "AP", "..0.1....1...1"),
    ("train", "patient00009", 1, "view1_frontal", "Frontal", "AP", "1............."),
    ("valid", "patient64541", 1, "view1_frontal", "Frontal", "AP", "00010000000001"),
    ("valid", "patient64542", 1, "view1_frontal", "Frontal", "PA", "10000000000000"),
    ("valid", "patient64542", 1, "view2_lateral", "Lateral", "", "10000000000000"),
    ("valid", "patient64543", 1, "view1_frontal", "Frontal", "AP", "01110000000101"),
    ("valid", "patient64544", 1, "view1_frontal", "Frontal", "AP", "00001010100000"),
]


def chexpert_path(row: tuple) -> str:
    """The Path column: CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg."""
    table, patient, study, view = row[:4]
    return f"{CHEXPERT_DIR}/{table}/{patient}/study{study}/{view}.jpg"


def _chexpert_count(char: str) -> dict[str, int]:
    kept = [r[6] for r in CHEXPERT_ROWS if r[4] == "Frontal"]  # lateral rows are skipped by default
    return {f: sum(cells[i] == char for cells in kept) for i, f in enumerate(CHEXPERT_FINDINGS)}


CHEXPERT_POSITIVES = _chexpert_count("1")
CHEXPERT_UNCERTAIN = _chexpert_count("u")
CHEXPERT_BLANK = _chexpert_count(".")


def write_chexpert(base: Path) -> Path:
    """CheXpert-v1.0-small/{train,valid}.csv (Path prefixed with the folder's name, -1.0 and blank
    cells, lateral rows with a blank AP/PA) and the images. Returns CheXpert-v1.0-small/."""
    root = base / CHEXPERT_DIR
    tables: dict[str, list[list[str]]] = {"train": [], "valid": []}
    for i, row in enumerate(CHEXPERT_ROWS):
        table, _, _, _, frontal, ap_pa, cells = row
        path = chexpert_path(row)
        write_image(base / path, "lateral" if frontal == "Lateral" else "x", 600 + i)
        tables[table].append([path, "Female" if i % 3 else "Male", str(50 + i), frontal, ap_pa,
                              *(_CELL[c] for c in cells)])
    for table, rows in tables.items():
        with (root / f"{table}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CHEXPERT_HEADER)
            w.writerows(rows)
    return root


# --------------------------------------------------------------------------- MIMIC-CXR-JPG

MIMIC_FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
                  "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                  "Pneumothorax", "Support Devices")
MIMIC_METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                          "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                          "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
# (subject_id, study_id, split, ViewPositions of its images, 14 label characters in MIMIC_FINDINGS order
#  or None: a study with no row in the label table)
MIMIC_STUDIES = [
    ("10000032", "50414267", "train", ("PA", "LATERAL"), "........1....."),
    ("10000032", "53189527", "train", ("AP",), "..........u..."),
    ("10000032", "53911762", "train", ("AP", "AP"), "........1....."),
    ("10000764", "57375967", "train", ("AP", "LL"), "..1.....u....."),
    ("10000898", "50771383", "train", ("PA", "LATERAL"), "u......1.....1"),
    ("10001176", "54684191", "train", ("PA", ""), "1...........0."),  # one image without ViewPosition
    ("11000011", "51029426", "train", ("AP",), "11.1...u.1...1"),
    ("12000034", "52201871", "train", ("PA", "LATERAL", "PA"), "0......1..u1.."),
    ("12000034", "59988438", "train", ("AP",), None),
    ("15000393", "56699142", "validate", ("AP", "LATERAL"), ".1..u....1...1"),
    ("19999987", "58971208", "test", ("AP",), "1u..1...0..1.1"),
    ("19999987", "55368167", "test", ("PA", "LL"), ".............1"),
]
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral",
                 "": ""}


def mimic_dicom(study: str, k: int) -> str:
    """A dicom_id in the real shape: five dash-joined groups of 8 hex digits."""
    h = hashlib.sha1(f"{study}-{k}".encode()).hexdigest()
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


def mimic_images() -> list[tuple[str, str, str, str, str, str | None]]:
    """(dicom_id, subject, study, split, ViewPosition, label characters) of every image."""
    return [(mimic_dicom(study, k), subject, study, split, view, cells)
            for subject, study, split, views, cells in MIMIC_STUDIES for k, view in enumerate(views)]


def _mimic_kept() -> list[str]:
    """The label characters of each image the adapter keeps: PA or AP, and its study labelled."""
    return [cells for _, _, _, _, view, cells in mimic_images() if view in ("PA", "AP") and cells is not None]


MIMIC_POSITIVES = {f: sum(c[i] == "1" for c in _mimic_kept()) for i, f in enumerate(MIMIC_FINDINGS)}
MIMIC_UNCERTAIN = {f: sum(c[i] == "u" for c in _mimic_kept()) for i, f in enumerate(MIMIC_FINDINGS)}


def write_mimic(base: Path) -> Path:
    """mimic-cxr-jpg/2.0.0/ with the three mimic-cxr-2.0.0-*.csv.gz tables and
    files/pNN/p<subject>/s<study>/<dicom_id>.jpg. Returns the 2.0.0/ folder."""
    root = base / "mimic-cxr-jpg" / "2.0.0"
    meta, split = [], []
    for i, (dicom, subject, study, part, view, _) in enumerate(mimic_images()):
        write_image(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg",
                    view.lower() or "x", 700 + i)
        procedure = "CHEST (PA AND LAT)" if view in ("PA", "LATERAL") else "CHEST (PORTABLE AP)"
        meta.append([dicom, subject, study, procedure, view, "3056", "2544", "21800506", "213014.531", procedure,
                     _VIEW_MEANING[view], "Erect" if view else ""])
        split.append([dicom, study, subject, part])
    labels = [[subject, study, *(_CELL[c] for c in cells)] for subject, study, _, _, cells in MIMIC_STUDIES if cells]
    tables = {
        "metadata": pd.DataFrame(meta, columns=MIMIC_METADATA_COLUMNS),
        "split": pd.DataFrame(split, columns=["dicom_id", "study_id", "subject_id", "split"]),
        "chexpert": pd.DataFrame(labels, columns=["subject_id", "study_id", *MIMIC_FINDINGS]),
    }
    for name, table in tables.items():
        table.to_csv(root / f"mimic-cxr-2.0.0-{name}.csv.gz", index=False, compression="gzip")
    (root / "IMAGE_FILENAMES").write_text("\n".join(
        f"files/p{s[:2]}/p{s}/s{st}/{d}.jpg" for d, s, st, *_ in mimic_images()) + "\n")
    return root

