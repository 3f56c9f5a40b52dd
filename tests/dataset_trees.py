"""Tiny copies of the public CXR datasets' layouts, with their real names and quirks.

Each writer builds a tree under a folder and returns what data.root must point at (the folder as
the dataset unpacks). Images are small (>= 64 px) grayscale PNG/JPEG; each label draws a bright
square in its own place so a training step has something to learn.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SIDE = 64
_SPOT = {"normal": (4, 4), "bacteria": (4, 36), "virus": (36, 4), "covid": (36, 36), "lung_opacity": (20, 20),
         "pneumonia": (4, 20), "non_covid": (20, 4)}


def write_image(path: Path, label: str, seed: int, size: tuple[int, int] = (SIDE, SIDE)) -> Path:
    """A grayscale image (w, h = size) of noise plus the label's square; format from the suffix."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = rng.uniform(0.1, 0.4, (h, w))
    r, c = _SPOT.get(label, (28, 28))
    r, c = r * h // SIDE, c * w // SIDE
    img[r : r + h // 4, c : c + w // 4] = 0.95
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def write_mask(path: Path, side: int) -> Path:
    """A lung mask (two boxes) at its own pixel size, as the radiography DB ships them (256 vs 299)."""
    m = np.zeros((side, side), np.uint8)
    m[side // 8 : side * 7 // 8, side // 8 : side * 7 // 16] = 255
    m[side // 8 : side * 7 // 8, side * 9 // 16 : side * 7 // 8] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m).save(path)
    return path


# --------------------------------------------------------------------------- Kermany

# (official split, class folder, file name): patients person447 and IM-0003 sit in train and test.
KERMANY_FILES = [
    *[("train", "NORMAL", f"IM-{i:04d}-0001.jpeg") for i in range(1, 7)],
    ("train", "NORMAL", "IM-0001-0002.jpeg"),
    ("train", "NORMAL", "NORMAL2-IM-0012-0001.jpeg"),
    ("train", "NORMAL", "NORMAL2-IM-0013-0001.jpeg"),
    *[("train", "PNEUMONIA", f"person{i}_bacteria_{i * 3}.jpeg") for i in range(1, 6)],
    ("train", "PNEUMONIA", "person1_bacteria_4.jpeg"),
    *[("train", "PNEUMONIA", f"person{i}_virus_{i * 5}.jpeg") for i in range(440, 446)],
    ("train", "PNEUMONIA", "person447_virus_921_1.jpeg"),
    ("train", "PNEUMONIA", "person447_virus_921_2.jpeg"),
    ("val", "NORMAL", "NORMAL2-IM-1427-0001.jpeg"),
    ("val", "PNEUMONIA", "person1946_bacteria_4874.jpeg"),
    ("val", "PNEUMONIA", "person1950_virus_4881.jpeg"),
    ("test", "NORMAL", "IM-0003-0002.jpeg"),
    ("test", "NORMAL", "IM-0101-0001.jpeg"),
    ("test", "NORMAL", "NORMAL2-IM-0300-0001.jpeg"),
    ("test", "PNEUMONIA", "person447_virus_923.jpeg"),
    ("test", "PNEUMONIA", "person100_bacteria_480.jpeg"),
    ("test", "PNEUMONIA", "person101_virus_188.jpeg"),
]


def kermany_label(folder: str, name: str) -> str:
    """The label the adapter must give (NORMAL, or bacteria/virus from the name)."""
    return "normal" if folder == "NORMAL" else ("bacteria" if "bacteria" in name else "virus")


def write_kermany(base: Path) -> Path:
    """chest_xray/ as the Kaggle zip unpacks: plus __MACOSX/, ._* files, .DS_Store and the nested
    chest_xray/chest_xray/ duplicate. Returns chest_xray/."""
    root = base / "chest_xray"
    for i, (split, folder, name) in enumerate(KERMANY_FILES):
        path = write_image(root / split / folder / name, kermany_label(folder, name), i)
        if i < 3:  # the zip's duplicate tree and the macOS resource forks
            dup = root / "chest_xray" / split / folder / name
            dup.parent.mkdir(parents=True, exist_ok=True)
            dup.write_bytes(path.read_bytes())
            (root / split / folder / f"._{name}").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource")
            fork = root / "__MACOSX" / "chest_xray" / split / folder / f"._{name}"
            fork.parent.mkdir(parents=True, exist_ok=True)
            fork.write_bytes(b"\x00\x05\x16\x07")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


# --------------------------------------------------------------------------- CoronaHack

# (name, Label, Dataset_type, Label_2_Virus_category, Label_1_Virus_category, expected label)
CORONAHACK_ROWS = [
    *[(f"IM-{i:04d}-0001.jpeg", "Normal", "TRAIN", "", "", "normal") for i in range(1, 5)],
    ("NORMAL2-IM-0012-0001.jpeg", "Normal", "TEST", "", "", "normal"),
    ("IM-0005-0001.jpeg", "Normal", "TEST", "", "", "normal"),
    *[(f"person{i}_bacteria_{i}.jpeg", "Pnemonia", "TRAIN", "", "bacteria", "bacteria") for i in range(1, 5)],
    ("person9_bacteria_40.jpeg", "Pnemonia", "TEST", "", "bacteria", "bacteria"),
    ("person8_bacteria_37.jpeg", "Pnemonia", "TRAIN", "Streptococcus", "bacteria", "bacteria"),
    *[(f"person{i}_virus_{i}.jpeg", "Pnemonia", "TRAIN", "", "Virus", "virus") for i in range(440, 444)],
    ("person447_virus_921_1.jpeg", "Pnemonia", "TEST", "", "Virus", "virus"),
    ("person450_virus_930.jpeg", "Pnemonia", "TRAIN", "SARS", "Virus", "virus"),
    *[(f"1-s2.0-S01406736203037{i:02d}-fx1_lrg.jpg", "Pnemonia", "TRAIN", "COVID-19", "Virus", "covid") for i in range(4)],
    ("nejmoa2001191_f5-PA.jpeg", "Pnemonia", "TEST", "COVID-19", "Virus", "covid"),
    ("covid-19-pneumonia-14-PA.png", "Pnemonia", "TRAIN", "COVID-19", "Virus", "covid"),
    ("SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg", "Pnemonia", "TRAIN", "ARDS", "Stress-Smoking", None),
]


def write_coronahack(base: Path) -> Path:
    """Chest_xray_Corona_Metadata.csv (unnamed index column, 'Pnemonia') and the doubly nested
    Coronahack-Chest-XRay-Dataset/Coronahack-Chest-XRay-Dataset/{train,test}/. Returns base."""
    images = base / "Coronahack-Chest-XRay-Dataset" / "Coronahack-Chest-XRay-Dataset"
    rows = []
    for i, (name, label, split, l2, l1, expected) in enumerate(CORONAHACK_ROWS):
        write_image(images / split.lower() / name, expected or "x", 100 + i)
        rows.append({"X_ray_image_name": name, "Label": label, "Dataset_type": split,
                     "Label_2_Virus_category": l2, "Label_1_Virus_category": l1})
    pd.DataFrame(rows).to_csv(base / "Chest_xray_Corona_Metadata.csv")  # pandas' unnamed index
    (base / "Chest_xray_Corona_dataset_Summary.csv").write_text(",Label,Label_1_Virus_category,Label_2_Virus_category,Image_Count\n")
    return base


# --------------------------------------------------------------------------- COVID-19 Radiography DB

RADIOGRAPHY_CLASSES = {"COVID": "COVID", "Lung_Opacity": "Lung_Opacity", "Normal": "NORMAL",
                       "Viral Pneumonia": "Viral Pneumonia"}  # folder -> its spelling in the xlsx
RADIOGRAPHY_LABELS = {"COVID": "covid", "Lung_Opacity": "lung_opacity", "Normal": "normal",
                      "Viral Pneumonia": "virus"}


def write_xlsx(path: Path, names: list[str], url: str) -> None:
    """A *.metadata.xlsx with the real columns."""
    pd.DataFrame({"FILE NAME": names, "FORMAT": "PNG", "SIZE": "256*256", "URL": url}).to_excel(path, index=False)


def write_covid_radiography(base: Path, per_class: int = 5, image_side: int = 80, mask_side: int = 64) -> Path:
    """COVID-19_Radiography_Dataset/<Class>/{images,masks}/<Class>-<n>.png + <Class>.metadata.xlsx
    (NORMAL-1 for Normal-1.png). Masks are smaller than images, as in the real set."""
    root = base / "COVID-19_Radiography_Dataset"
    for k, (folder, spelled) in enumerate(RADIOGRAPHY_CLASSES.items()):
        for i in range(1, per_class + 1):
            name = f"{folder}-{i}.png"
            write_image(root / folder / "images" / name, RADIOGRAPHY_LABELS[folder], 10 * k + i,
                        (image_side, image_side))
            write_mask(root / folder / "masks" / name, mask_side)
        write_xlsx(root / f"{folder}.metadata.xlsx", [f"{spelled}-{i}" for i in range(1, per_class + 1)],
                   f"https://example.org/{folder.lower()}")
    (root / "README.md.txt").write_text("COVID-19 CHEST X-RAY DATABASE\n")
    return root


def write_covid_radiography_old(base: Path, per_class: int = 3) -> Path:
    """The older release: COVID-19/, NORMAL/, Viral Pneumonia/ with 'COVID-19 (125).png'."""
    root = base / "COVID-19 Radiography Database"
    for k, (folder, label) in enumerate({"COVID-19": "covid", "NORMAL": "normal", "Viral Pneumonia": "virus"}.items()):
        names = [f"{folder} ({n})" for n in range(125, 125 + per_class)]
        for i, name in enumerate(names):
            write_image(root / folder / f"{name}.png", label, 50 + 10 * k + i)
        spelled = "matadata" if folder == "Viral Pneumonia" else "metadata"  # sic, as released
        write_xlsx(root / f"{folder}.{spelled}.xlsx", [n.upper() for n in names], "https://example.org/old")
    return root


# --------------------------------------------------------------------------- Cohen

COHEN_HEADER = ("patientid,offset,sex,age,finding,RT_PCR_positive,survival,intubated,intubation_present,"
                "went_icu,in_icu,needed_supplemental_O2,extubated,temperature,pO2_saturation,"
                "leukocyte_count,neutrophil_count,lymphocyte_count,view,modality,date,location,folder,"
                "filename,doi,url,license,clinical_notes,other_notes,")
# (patientid, finding, view, modality, filename, expected label or None when skipped)
COHEN_ROWS = [
    ("2", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg", "covid"),
    ("2", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "auntminnie-b-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg", "covid"),
    ("3", "Pneumonia/Viral/COVID-19", "AP", "X-ray", "lancet-case2a.jpg", "covid"),
    ("4", "Pneumonia/Viral/COVID-19", "AP Supine", "X-ray", "nejmc2001573_f1a.jpeg", "covid"),
    ("5", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "covid-19-pneumonia-7-PA.jpg", "covid"),
    ("6", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "covid-19-pneumonia-15-PA.jpg", "covid"),
    ("5", "Pneumonia/Viral/COVID-19", "L", "X-ray", "covid-19-pneumonia-7-L.jpg", None),
    ("7", "Pneumonia/Viral/COVID-19", "Axial", "CT", "covid-19-pneumonia-20-ct.png", None),
    ("8", "Pneumonia/Viral/SARS", "PA", "X-ray", "SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg", "virus"),
    ("9", "Pneumonia/Viral/SARS", "AP", "X-ray", "SARS-10.1148rg.242035193-g04mr34g04a-Fig4a-day7.jpeg", "virus"),
    ("10", "Pneumonia/Bacterial/Streptococcus", "PA", "X-ray", "streptococcus-pneumoniae-pneumonia-1.jpg", "bacteria"),
    ("11", "Pneumonia/Bacterial/Klebsiella", "PA", "X-ray", "klebsiella-1.jpg", "bacteria"),
    ("12", "No Finding", "PA", "X-ray", "nofinding-1.png", "normal"),
    ("13", "No Finding", "AP", "X-ray", "nofinding-2.png", "normal"),
    ("14", "todo", "PA", "X-ray", "todo-1.png", None),
]
NOTE = "On January 22, 2020 a 65-year-old man, \"Mr. X\", was admitted.\nHe had a fever; day 3:\ndyspnea"


def write_cohen(base: Path) -> Path:
    """covid-chestxray-dataset/metadata.csv (quoted multi-line notes, trailing empty column,
    CT and L rows, a 'todo' finding) and images/. Returns the dataset folder."""
    root = base / "covid-chestxray-dataset"
    (root / "images").mkdir(parents=True)
    with (root / "metadata.csv").open("w", newline="") as f:
        f.write(COHEN_HEADER + "\n")
        w = csv.writer(f)
        for i, (pid, finding, view, modality, name, label) in enumerate(COHEN_ROWS):
            write_image(root / "images" / name, label or "x", 200 + i)
            w.writerow([pid, "0", "M", "65", finding, "Y", "", "", "", "", "", "", "", "", "", "", "", "",
                        view, modality, "2020", "Wuhan, China", "images", name, "10.1/x", "https://x",
                        "CC BY", NOTE if i % 3 == 0 else "", "", ""])
    return root


COHEN_OLD_HEADER = "patientid,offset,sex,age,finding,survival,view,modality,date,location,filename,doi,url,license,clinical notes,other notes,"
COHEN_OLD_ROWS = [  # flat findings, no folder column
    ("1", "COVID-19", "PA", "X-ray", "old-covid-1.jpg", "covid"),
    ("1", "COVID-19, ARDS", "PA", "X-ray", "old-covid-2.jpg", "covid"),
    ("2", "SARS", "PA", "X-ray", "old-sars-1.jpg", "virus"),
    ("3", "Streptococcus", "PA", "X-ray", "old-strep-1.jpg", "bacteria"),
    ("4", "ARDS", "PA", "X-ray", "old-ards-1.jpg", "ards"),  # an unlisted leaf is its own label
    ("5", "Unknown", "PA", "X-ray", "old-unknown-1.jpg", None),
]


def write_cohen_old(base: Path) -> Path:
    """An early release: flat findings, no `folder` column, 'clinical notes' with a space."""
    root = base / "covid-chestxray-dataset-old"
    (root / "images").mkdir(parents=True)
    with (root / "metadata.csv").open("w", newline="") as f:
        f.write(COHEN_OLD_HEADER + "\n")
        w = csv.writer(f)
        for i, (pid, finding, view, modality, name, label) in enumerate(COHEN_OLD_ROWS):
            write_image(root / "images" / name, label or "x", 300 + i)
            w.writerow([pid, "0", "F", "50", finding, "", view, modality, "2020", "Italy", name, "",
                        "", "", NOTE, "", ""])
    return root


# --------------------------------------------------------------------------- COVIDx

# (split, patient id, file name, label word, source, expected label)
COVIDX_LINES = [
    *[("train", f"{100 + i}", f"{i:04x}a9e1-rsna.png", "negative", "rsna", "non_covid") for i in range(6)],
    *[("train", f"419639-00{i}", f"MIDRC-RICORD-1C-419639-00{i}-46647-0.png", "positive", "ricord", "covid") for i in range(3)],
    ("train", "COVID-19 (12)", "COVID-19(12).png", "positive", "sirm", "covid"),
    ("train", "COVID-19 (13)", "COVID-19 (13).png", "positive", "sirm", "covid"),  # a space in the file name too
    ("train", "COVID-19 (12)", "COVID-19(12)b.png", "positive", "sirm", "covid"),
    ("test", "200", "00c1-rsna.png", "negative", "rsna", "non_covid"),
    ("test", "201", "00c2-rsna.png", "negative", "rsna", "non_covid"),
    ("test", "COVID-19 (40)", "COVID-19(40).png", "positive", "sirm", "covid"),
    ("test", "419700-001", "MIDRC-RICORD-1C-419700-001-1.png", "positive", "ricord", "covid"),
]


def write_covidx(base: Path) -> Path:
    """train.txt / test.txt (`patientid filename label source`) and train/, test/. Returns base."""
    root = base / "covidx"
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for i, (split, pid, name, word, source, label) in enumerate(COVIDX_LINES):
        write_image(root / split / name, label, 400 + i)
        lines[split].append(f"{pid} {name} {word} {source}")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


# --------------------------------------------------------------------------- combined

def write_combined(base: Path) -> Path:
    """CoronaHack (unzipped as archive/) beside covid-chestxray-dataset/. Returns base."""
    write_coronahack(base / "archive")
    write_cohen(base)
    return base
