"""COVID-19 Radiography Database (Kaggle), both releases.

Current: COVID-19_Radiography_Dataset/{COVID,Lung_Opacity,Normal,Viral Pneumonia}/{images,masks}/
<Class>-<n>.png, with <Class>.metadata.xlsx files (FILE NAME, FORMAT, SIZE, URL) whose names
differ in case from the files (NORMAL-1 for Normal-1.png). Masks are smaller than the images;
they are resized to the image's field of view where they are loaded (cxrlab.datamodules.probe).
Older release: COVID-19/, NORMAL/, Viral Pneumonia/ with files like "COVID-19 (125).png".
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from cxrlab.datamodules.sources.kermany import is_image
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table, stem_patient

FOLDERS = {  # class folder, as spelled in either release -> label
    "COVID": "covid",
    "COVID-19": "covid",
    "Normal": "normal",
    "NORMAL": "normal",
    "Viral Pneumonia": "virus",
    "Lung_Opacity": "lung_opacity",
}
NAMES = ("COVID-19_Radiography_Dataset", "COVID-19 Radiography Database")
_XLSX = re.compile(r"^(.*)\.m[ae]tadata\.xlsx$", re.I)  # the older release spells it "matadata"


def class_dirs(d: Path) -> dict[Path, str]:
    """The known class folders of `d` and their labels (looked up by name, never listed)."""
    found: dict[Path, str] = {}
    seen: set[tuple[int, int]] = set()
    for name, label in FOLDERS.items():
        p = d / name
        if p.is_dir():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:  # Normal and NORMAL are one folder on macOS
                seen.add((st.st_dev, st.st_ino))
                found[p] = label
    return found


def dataset_dir(root: Path) -> Path | None:
    """root itself or its COVID-19_Radiography_Dataset sub-folder, if it holds >= 2 class folders."""
    for d in (root, *(root / n for n in NAMES)):
        if len(set(class_dirs(d).values())) >= 2:
            return d
    return None


def _key(name: str) -> str:
    """How a file stem and its xlsx FILE NAME meet: case and spaces ignored (NORMAL-1, Normal-1)."""
    return name.lower().replace(" ", "")


def read_metadata(d: Path, dirs: dict[Path, str]) -> dict[str, tuple[Path, str, str]]:
    """lower-case file stem -> (expected image path, label, URL) from the *.metadata.xlsx files."""
    out: dict[str, tuple[Path, str, str]] = {}
    folders = {p.name.lower(): p for p in dirs}
    books = [p for p in sorted(d.glob("*.xlsx")) if _XLSX.match(p.name)]
    if not books:
        return out
    try:
        import openpyxl  # noqa: F401  (pandas reads .xlsx through it)
    except ImportError:
        warnings.warn(
            f"{d}: {len(books)} *.metadata.xlsx file(s) not read (image origins unknown, metadata "
            "rows without a file not reported); pip install 'cxrlab[xlsx]'",
            stacklevel=3,
        )
        return out
    for book in books:
        folder = folders.get(_XLSX.match(book.name).group(1).lower())
        if folder is None:
            continue
        sheet = pd.read_excel(book, dtype=str).fillna("")
        cols = {c.strip().upper(): c for c in sheet.columns}
        if "FILE NAME" not in cols:
            raise ValueError(f"{book}: no 'FILE NAME' column; found {list(sheet.columns)}")
        images = folder / "images" if (folder / "images").is_dir() else folder
        for r in sheet.to_dict("records"):
            name = r[cols["FILE NAME"]].strip()
            fmt = r[cols["FORMAT"]].strip().lower() if "FORMAT" in cols else "png"
            if name:
                url = r[cols["URL"]] if "URL" in cols else ""
                out[_key(name)] = (images / f"{name}.{fmt or 'png'}", dirs[folder], url)
    return out


def _is_covid_radiography(root: Path) -> bool:
    """Its class folders plus a mark of this dataset, so plain covid/ normal/ trees stay `folder`."""
    d = dataset_dir(root)
    if d is None:
        return False
    dirs = class_dirs(d)
    return (
        d.name in NAMES
        or any((p / "images").is_dir() for p in dirs)
        or any(_XLSX.match(p.name) for p in d.glob("*.xlsx"))
        or "virus" in dirs.values()  # the "Viral Pneumonia" folder
    )


@register(
    "covid_radiography",
    summary="COVID-19 Radiography Database, current and older release (covid, lung_opacity, normal, virus)",
    folder="COVID-19_Radiography_Dataset/ (older release: the folder holding COVID-19/, NORMAL/)",
    detect=_is_covid_radiography,
)
def load_covid_radiography(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per image (its own patient: the set has no patient ids), lung mask when present."""
    d = dataset_dir(root)
    if d is None:
        raise ValueError(f"{root}: no COVID/, Normal/, ... class folders; point data.root at COVID-19_Radiography_Dataset/")
    dirs = class_dirs(d)
    meta = read_metadata(d, dirs)
    rows, seen = [], set()
    for folder, label in dirs.items():
        images = folder / "images" if (folder / "images").is_dir() else folder
        masks = folder / "masks" if (folder / "masks").is_dir() else None
        for f in sorted(images.iterdir()):
            if not is_image(f):
                continue
            key = _key(f.stem)
            seen.add(key)
            rows.append({
                "path": str(f.absolute()),
                "label": label,
                "patient_id": stem_patient(f.name),
                "mask_path": str((masks / f.name).absolute()) if masks else None,
                "origin": meta[key][2] if key in meta else "",
            })
    for key, (expected, label, url) in meta.items():
        if key not in seen:  # a metadata row without its image: the screen reports it missing
            rows.append({"path": str(expected.absolute()), "label": label,
                         "patient_id": stem_patient(expected.name), "mask_path": None, "origin": url})
    return make_table(rows, "covid_radiography", root)
