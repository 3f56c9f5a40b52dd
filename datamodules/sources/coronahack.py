"""CoronaHack chest X-ray set: Chest_xray_Corona_Metadata.csv + doubly nested image folders.

Metadata columns (after an unnamed index): X_ray_image_name, Label (Normal | Pnemonia, sic),
Dataset_type (TRAIN | TEST), Label_2_Virus_category (COVID-19, SARS, ARDS, Streptococcus or
empty), Label_1_Virus_category (bacteria, Virus, Stress-Smoking or empty). Images sit flat in
Coronahack-Chest-XRay-Dataset/Coronahack-Chest-XRay-Dataset/{train,test}/.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrlab.config import MAX_TABLE_BYTES, check_size
from cxrlab.datamodules.sources.kermany import kermany_patient
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table, require_columns

METADATA = "Chest_xray_Corona_Metadata.csv"
IMAGES = "Coronahack-Chest-XRay-Dataset"
COLUMNS = ("X_ray_image_name", "Label", "Dataset_type", "Label_2_Virus_category", "Label_1_Virus_category")


def image_dir(root: Path) -> Path:
    """The folder holding train/ and test/: doubly nested as unzipped, or a single level."""
    for d in (root / IMAGES / IMAGES, root / IMAGES, root):
        if (d / "train").is_dir() or (d / "test").is_dir():
            return d
    raise ValueError(f"{root}: no {IMAGES}/{IMAGES}/train or test folder next to {METADATA}")


def coronahack_label(label: str, kind: str, detail: str) -> str | None:
    """normal | bacteria | virus | covid (COVID-19 in Label_2 wins); None: outside the classes."""
    if detail.strip().upper() == "COVID-19":
        return "covid"
    if label.strip().lower() == "normal":
        return "normal"
    return {"bacteria": "bacteria", "virus": "virus"}.get(kind.strip().lower())


@register(
    "coronahack",
    summary="CoronaHack chest X-ray (normal, bacteria, virus, covid; TRAIN/TEST split)",
    folder=f"the folder holding {METADATA} and {IMAGES}/",
    detect=lambda root: (root / METADATA).is_file(),
    official_split=True,
)
def load_coronahack(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per metadata row; the file is looked up in the TRAIN/TEST folder it names."""
    meta = root / METADATA
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found; point data.root at the unzipped CoronaHack folder")
    table = pd.read_csv(check_size(meta, MAX_TABLE_BYTES, "a metadata table"), dtype=str, keep_default_na=False)
    require_columns(meta, table.columns, COLUMNS, "is this the CoronaHack metadata?")
    images = image_dir(root)
    rows = []
    for r in table.itertuples(index=False):
        name, split = r.X_ray_image_name.strip(), r.Dataset_type.strip().lower()
        label = coronahack_label(r.Label, r.Label_1_Virus_category, r.Label_2_Virus_category)
        raw = "/".join(v for v in (r.Label, r.Label_1_Virus_category, r.Label_2_Virus_category) if v)
        rows.append({
            "path": str((images / split / name).absolute()),
            "label": label or raw,
            "patient_id": kermany_patient(name),
            "official_split": split if split in ("train", "test") else "",
            "skip": "" if label else f"label {raw!r} is outside the classes normal, bacteria, virus, covid",
        })
    return make_table(rows, "coronahack", root)
