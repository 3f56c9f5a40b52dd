"""Kermany et al. pediatric pneumonia set: chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg.

Bacteria or virus is only in the file name (person12_bacteria_47.jpeg, person447_virus_921_1.jpeg);
patients are person<N>, IM-<4d> and NORMAL2-IM-<4d>, and the same person appears in the official
train and test splits. The Kaggle zip also holds __MACOSX/, ._* files and a nested duplicate
chest_xray/chest_xray/, which are never read.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from cxrlab.datamodules.images import IMAGE_SUFFIXES
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table

CLASS_DIRS = ("NORMAL", "PNEUMONIA")
SPLIT_DIRS = ("train", "val", "test")
_PATIENT = re.compile(r"^(NORMAL2-IM-\d+|IM-\d+|person\d+|(?:NORMAL|BACTERIA|VIRUS)-\d+)", re.I)
_KIND = re.compile(r"(bacteria|virus)", re.I)


def kermany_patient(name: str) -> str:
    """person447_virus_921_1.jpeg -> person447; IM-0001-0001 -> IM-0001; else the file stem."""
    stem = Path(name).stem
    m = _PATIENT.match(stem)
    return m.group(1) if m else stem


def pneumonia_kind(name: str) -> str | None:
    """'bacteria' or 'virus' from a Kermany file name, None when the name says neither."""
    m = _KIND.search(Path(name).stem)
    return m.group(1).lower() if m else None


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder `name` if it exists (a lookup, never a listing: detection runs on any root)."""
    path = folder / name
    return path if path.is_dir() else None


def dataset_dir(root: Path) -> Path | None:
    """The folder that holds train/ (root itself, or root/chest_xray as unzipped)."""
    for d in (root, root / "chest_xray"):
        train = _child(d, "train")
        if train is not None and any(_child(train, c) for c in CLASS_DIRS):
            return d
    return None


def is_image(path: Path) -> bool:
    """An image file that is not macOS metadata (._x.jpeg, .DS_Store)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


@register(
    "kermany",
    summary="Kermany pediatric pneumonia (NORMAL / PNEUMONIA -> normal, bacteria, virus)",
    folder="chest_xray/ as unzipped (holds train/, test/, optional val/)",
    detect=lambda root: dataset_dir(root) is not None,
    official_split=True,
)
def load_kermany(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per image; official_split from the folder it sits in."""
    d = dataset_dir(root)
    if d is None:
        raise ValueError(f"{root}: no train/NORMAL or train/PNEUMONIA folder; point data.root at chest_xray/")
    rows = []
    for split in SPLIT_DIRS:
        for cls in CLASS_DIRS:
            folder = _child(d / split, cls)
            if folder is None:
                continue
            for f in sorted(folder.iterdir()):
                if not is_image(f):
                    continue
                label = "normal" if cls == "NORMAL" else pneumonia_kind(f.name)
                rows.append({
                    "path": str(f.absolute()),
                    "label": label or "pneumonia",
                    "patient_id": kermany_patient(f.name),
                    "official_split": split,
                    "skip": "" if label else "PNEUMONIA image whose file name says neither bacteria nor virus",
                })
    return make_table(rows, "kermany", root)
