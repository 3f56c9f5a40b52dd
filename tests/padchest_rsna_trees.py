"""Tiny copies of PadChest and the RSNA Pneumonia Detection Challenge, as they unpack.

PadChest: the label CSV with every real column (an unnamed pandas index first), Labels as list
text with stray spaces, blank, "[]" and "['']" cells, and 16-bit grayscale PNGs in numbered
folders. RSNA: the stage 2 label CSVs (one row per box, blank boxes on Target 0 rows) and
uncompressed 8-bit MONOCHROME2 DICOMs named <patientId>.dcm. Each writer returns what data.root
must point at; the expected counts below come from the rows as written, not from the adapters.
"""

from __future__ import annotations

import csv
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from samples import write_dicom

SIDE = 64

# --------------------------------------------------------------------------- PadChest

PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
PADCHEST_COLUMNS = (
    "ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,ViewPosition_DICOM,"
    "Projection,MethodProjection,Pediatric,Modality_DICOM,Manufacturer_DICOM,PhotometricInterpretation_DICOM,"
    "PixelRepresentation_DICOM,PixelAspectRatio_DICOM,SpatialResolution_DICOM,BitsStored_DICOM,"
    "WindowCenter_DICOM,WindowWidth_DICOM,Rows_DICOM,Columns_DICOM,XRayTubeCurrent_DICOM,Exposure_DICOM,"
    "ExposureInuAs_DICOM,ExposureTime,RelativeXRayExposure_DICOM,ReportID,Report,MethodLabel,Labels,"
    "Localizations,LabelsLocalizationsBySentence,labelCUIS,LocalizationsCUIS"
).split(",")
# An id torchxrayvision lists as broken (it is in padchest.BROKEN_IMAGES); written as a truncated PNG.
PADCHEST_BROKEN_ID = "216840111366964012339356563862009072111404053_00-043-192.png"


class PadRow(NamedTuple):
    """One CSV row: what is written, and what the adapter must make of it."""

    n: int  # makes the ImageID, StudyID and seed
    image_dir: int
    patient: str
    projection: str
    labels: str  # the Labels cell as written
    findings: tuple[str, ...] = ()  # expected positives (the row is kept)
    skip: str = ""  # a word the skip reason must contain ('' = kept)
    write: bool = True  # False: the CSV lists an image the folders lack


def padchest_id(n: int) -> str:
    """A real-looking ImageID: 45 digits, '_', the scan's three numbers."""
    return f"2168401113669640{12339356563862009072111400000 + n * 7919:029d}_00-{n:03d}-{(n * 37) % 200:03d}.png"


PADCHEST_ROWS = [
    PadRow(1, 0, "P001", "PA", "['normal']"),
    PadRow(2, 0, "P001", "PA", "['pleural effusion', 'cardiomegaly']", ("Cardiomegaly", "Effusion")),
    PadRow(3, 0, "P002", "PA", "['pneumonia', ' pleural effusion']", ("Effusion", "Pneumonia")),
    PadRow(4, 1, "P003", "AP", "[' normal']"),
    PadRow(5, 1, "P004", "PA", "['COPD signs', ' air trapping', ' flattened diaphragm']",
           ("Air Trapping", "Flattened Diaphragm")),
    PadRow(6, 1, "P005", "PA", "['laminar atelectasis', 'atelectasis basal']", ("Atelectasis",)),
    PadRow(7, 1, "P006", "PA", "['alveolar pattern', 'consolidation', 'air bronchogram']",
           ("Consolidation", "Infiltration")),
    PadRow(8, 1, "P007", "PA", "['pericardial effusion']"),  # not a pleural effusion
    PadRow(9, 7, "P008", "PA", "['pseudonodule', 'nipple shadow']"),  # not a nodule
    PadRow(10, 7, "P009", "PA", "['multiple nodules']", ("Nodule",)),
    PadRow(11, 7, "P010", "PA", "['subcutaneous emphysema', ' emphysema']", ("Emphysema",)),
    PadRow(12, 7, "P011", "PA", "['hiatal hernia', 'descendent aortic elongation', 'scoliosis']",
           ("Aortic Elongation", "Hernia", "Scoliosis")),
    PadRow(13, 12, "P012", "PA", "['callus rib fracture']", ("Fracture",)),
    PadRow(14, 12, "P013", "PA", "['calcified granuloma', 'tuberculosis sequelae']", ("Granuloma", "Tuberculosis")),
    PadRow(15, 12, "P014", "PA", "['calcified adenopathy', 'pulmonary artery enlargement']", ("Hilar Enlargement",)),
    PadRow(16, 12, "P015", "PA", "['hydropneumothorax']", ("Pneumothorax",)),
    PadRow(17, 33, "P016", "PA", "['pulmonary mass', 'breast mass']", ("Mass",)),
    PadRow(18, 33, "P017", "PA", "['costophrenic angle blunting', 'apical pleural thickening']",
           ("Costophrenic Angle Blunting", "Pleural_Thickening")),
    PadRow(19, 33, "P018", "PA", "['aortic atheromatosis', 'hemidiaphragm elevation']",
           ("Aortic Atheromatosis", "Hemidiaphragm Elevation")),
    PadRow(20, 54, "P019", "PA", "['pulmonary edema', 'pulmonary fibrosis', 'bronchiectasis', 'cardiomegaly']",
           ("Bronchiectasis", "Cardiomegaly", "Edema", "Fibrosis")),
    PadRow(21, 54, "P020", "AP_horizontal", "['unchanged', 'endotracheal tube']"),  # kept: AP Supine
    PadRow(22, 54, "P021", "PA", "['reticular interstitial pattern', 'atypical pneumonia']",
           ("Infiltration", "Pneumonia")),
    PadRow(23, 54, "P002", "L", "['pneumonia']", skip="view L"),
    PadRow(24, 2, "P022", "COSTAL", "['rib fracture']", skip="view COSTAL"),
    PadRow(25, 2, "P023", "PA", "['normal']", skip="file is missing", write=False),
    PadRow(26, 2, "P024", "PA", "[]", skip="names no label"),
    PadRow(27, 2, "P025", "PA", "['']", skip="names no label"),
    PadRow(28, 2, "P026", "PA", "", skip="Labels is blank"),
    PadRow(29, 2, "P027", "EXCLUDE", "['exclude']", skip="view EXCLUDE"),
    PadRow(30, 3, "P028", "PA", "['exclude']", skip="'exclude'"),
]
PADCHEST_BROKEN = PadRow(0, 0, "P029", "PA", "['normal']", skip="known broken")


def padchest_rows() -> list[tuple[str, PadRow]]:
    """(ImageID, row) of every CSV row, the broken id included."""
    return [(padchest_id(r.n), r) for r in PADCHEST_ROWS] + [(PADCHEST_BROKEN_ID, PADCHEST_BROKEN)]


PADCHEST_KEPT = {image_id: r for image_id, r in padchest_rows() if not r.skip}
PADCHEST_SKIPPED = {image_id: r for image_id, r in padchest_rows() if r.skip}
# Positives per finding over the kept rows; a finding absent here has none.
PADCHEST_EXPECTED = dict(Counter(f for r in PADCHEST_KEPT.values() for f in r.findings))


def write_png16(path: Path, seed: int, spot: int = 0) -> Path:
    """A 16-bit grayscale PNG (PIL mode I;16): 12-bit-like noise plus one bright square."""
    rng = np.random.default_rng(seed)
    img = rng.integers(8000, 24000, (SIDE, SIDE))
    r, c = (spot * 7) % 48, (spot * 13) % 48
    img[r : r + 16, c : c + 16] = 60000
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint16)).save(path)
    return path


def _padchest_line(index: int, image_id: str, r: PadRow) -> list[str]:
    """Every column of one CSV row, in the real file's style."""
    view_dicom = {"PA": "POSTEROANTERIOR", "AP": "ANTEROPOSTERIOR", "L": "LATERAL"}.get(r.projection, "")
    values = {
        "ImageID": image_id, "ImageDir": str(r.image_dir), "StudyDate_DICOM": f"2014{(r.n % 12) + 1:02d}15",
        "StudyID": f"{r.n:032x}", "PatientID": r.patient, "PatientBirth": "1946.0", "PatientSex_DICOM": "M" if r.n % 2 else "F",
        "ViewPosition_DICOM": view_dicom, "Projection": r.projection,
        "MethodProjection": "Manual review of DICOM fields", "Pediatric": "No", "Modality_DICOM": "CR",
        "Manufacturer_DICOM": "PhilipsMedicalSystems", "PhotometricInterpretation_DICOM": "MONOCHROME2",
        "PixelRepresentation_DICOM": "0", "PixelAspectRatio_DICOM": "", "SpatialResolution_DICOM": "0.139",
        "BitsStored_DICOM": "12", "WindowCenter_DICOM": "2048.0", "WindowWidth_DICOM": "4096.0",
        "Rows_DICOM": "2828", "Columns_DICOM": "2320", "XRayTubeCurrent_DICOM": "", "Exposure_DICOM": "",
        "ExposureInuAs_DICOM": "", "ExposureTime": "", "RelativeXRayExposure_DICOM": "",
        "ReportID": str(4000000 + r.n), "Report": "sin hallazgos radiologicos significativos , cardiomegalia .",
        "MethodLabel": "Physician" if r.n % 4 == 0 else "RNN_model", "Labels": r.labels,
        "Localizations": "['loc left']" if "effusion" in r.labels else "[]",
        "LabelsLocalizationsBySentence": f"[{r.labels}]" if r.labels else "",
        "labelCUIS": "['C0032227']" if "effusion" in r.labels else "[]", "LocalizationsCUIS": "[]",
    }
    return [str(index)] + [values[c] for c in PADCHEST_COLUMNS]


def write_padchest(base: Path, gz: bool = False) -> Path:
    """The label CSV (or .csv.gz) beside image folders 0/ .. 54/. Returns the folder."""
    root = base / "padchest"
    root.mkdir(parents=True)
    lines = []
    for i, (image_id, r) in enumerate(padchest_rows()):
        if r.write:
            path = write_png16(root / str(r.image_dir) / image_id, r.n, i)
            if image_id == PADCHEST_BROKEN_ID:  # truncated, as torchxrayvision found it
                path.write_bytes(path.read_bytes()[:100])
        lines.append(_padchest_line(i, image_id, r))
    text_path = root / PADCHEST_CSV
    with text_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([""] + PADCHEST_COLUMNS)  # pandas' unnamed index column
        w.writerows(lines)
    if gz:
        import gzip

        (root / f"{PADCHEST_CSV}.gz").write_bytes(gzip.compress(text_path.read_bytes()))
        text_path.unlink()
    return root


# --------------------------------------------------------------------------- RSNA Pneumonia

RSNA_OPACITY, RSNA_NOT_NORMAL, RSNA_NORMAL = "Lung Opacity", "No Lung Opacity / Not Normal", "Normal"


class RsnaImage(NamedTuple):
    """One patientId: its boxes (one CSV row each; none = one blank Target 0 row) and class."""

    n: int
    detail: str
    view: str
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    write: bool = True  # False: the CSVs list a DICOM the images folder lacks


RSNA_IMAGES = [
    RsnaImage(1, RSNA_OPACITY, "AP", ((4, 6, 20, 30), (36, 8, 18, 28))),
    RsnaImage(2, RSNA_OPACITY, "AP", ((10, 10, 15, 25),)),
    RsnaImage(3, RSNA_OPACITY, "PA", ((5, 20, 12, 20), (40, 22, 14, 22), (20, 40, 10, 10))),
    RsnaImage(4, RSNA_OPACITY, "AP", ((30, 12, 20, 34),)),
    RsnaImage(5, RSNA_OPACITY, "PA", ((8, 8, 16, 16), (38, 30, 16, 20))),
    RsnaImage(6, RSNA_OPACITY, "AP", ((12, 16, 22, 30), (34, 16, 20, 30), (26, 44, 8, 8), (2, 2, 6, 6))),
    RsnaImage(7, RSNA_NOT_NORMAL, "PA"),
    RsnaImage(8, RSNA_NOT_NORMAL, "AP"),
    RsnaImage(9, RSNA_NOT_NORMAL, "PA"),
    RsnaImage(10, RSNA_NOT_NORMAL, "AP"),
    RsnaImage(11, RSNA_NORMAL, "PA"),
    RsnaImage(12, RSNA_NORMAL, "PA"),
    RsnaImage(13, RSNA_NORMAL, "AP"),
    RsnaImage(14, RSNA_NORMAL, "PA"),
    RsnaImage(15, RSNA_OPACITY, "PA", ((6, 6, 10, 10),)),
    RsnaImage(16, RSNA_NORMAL, "PA", write=False),
]


def rsna_id(n: int) -> str:
    """A patientId as the challenge writes them (a UUID)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rsna-{n}"))


RSNA_KEPT = {rsna_id(i.n): i for i in RSNA_IMAGES if i.write}
RSNA_MISSING = [rsna_id(i.n) for i in RSNA_IMAGES if not i.write]
RSNA_EXPECTED = {"Lung Opacity": sum(bool(i.boxes) for i in RSNA_KEPT.values())}
RSNA_DETAILS = dict(Counter(i.detail for i in RSNA_KEPT.values()))
RSNA_VIEWS = dict(Counter(i.view for i in RSNA_KEPT.values()))
RSNA_TEST_ONLY = rsna_id(99)  # in stage_2_test_images/ only: never read


def write_rsna_dicom(path: Path, pid: str, view: str, boxes: tuple[tuple[int, int, int, int], ...], seed: int) -> Path:
    """An uncompressed 8-bit MONOCHROME2 CR DICOM with the challenge's header fields (the real
    files are JPEG-compressed, which pydicom cannot write; the decoder reads both)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 90, (SIDE, SIDE)).astype(np.uint8)
    for x, y, w, h in boxes:
        img[y : y + h, x : x + w] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the challenge writes ages as '51', not the DICOM '051Y'
        warnings.simplefilter("ignore")
        return write_dicom(
            path, img, modality="CR", bits_stored=8, PatientName=pid, PatientID=pid, PatientAge="51",
            PatientSex="F", ConversionType="WSD", BodyPartExamined="CHEST", ViewPosition=view,
            SeriesDescription=f"view: {view}",
        )


def write_rsna(base: Path) -> Path:
    """rsna-pneumonia-detection-challenge/: stage 2 label CSVs, train and test DICOM folders."""
    root = base / "rsna-pneumonia-detection-challenge"
    labels, details = [], []
    for img in RSNA_IMAGES:
        pid = rsna_id(img.n)
        if img.write:
            write_rsna_dicom(root / "stage_2_train_images" / f"{pid}.dcm", pid, img.view, img.boxes, img.n)
        for b in img.boxes or [None]:
            labels.append([pid, *(f"{v:.1f}" for v in b), "1"] if b else [pid, "", "", "", "", "0"])
            details.append([pid, img.detail])
    write_rsna_dicom(root / "stage_2_test_images" / f"{RSNA_TEST_ONLY}.dcm", RSNA_TEST_ONLY, "PA", (), 99)
    for name, header, rows in (("stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], labels),
                               ("stage_2_detailed_class_info.csv", ["patientId", "class"], details)):
        with (root / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    (root / "stage_2_sample_submission.csv").write_text(f"patientId,PredictionString\n{RSNA_TEST_ONLY},0.5 0 0 100 100\n")
    (root / "GCP Credits Request Link - RSNA.txt").write_text("https://example.org/gcp\n")
    return root
