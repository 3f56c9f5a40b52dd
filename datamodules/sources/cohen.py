"""Cohen's covid-chestxray-dataset: metadata.csv + images/ (and CT volumes/).

metadata.csv has quoted multi-line fields and a trailing empty column. `finding` is a slash
hierarchy (Pneumonia/Viral/COVID-19); older releases have flat findings (COVID-19, SARS,
Streptococcus) and no `folder` column. CT rows and views outside data.views (lateral L) are
skipped with their reason; `patientid` groups a patient's images.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrlab.config import MAX_TABLE_BYTES, check_size
from cxrlab.datamodules.sources.options import SourceOptions
from cxrlab.datamodules.sources.registry import register
from cxrlab.datamodules.sources.table import make_table, require_columns

# Leaves of flat (older) findings and of findings whose hierarchy lacks a category.
LEAVES = {
    "covid-19": "covid",
    "no finding": "normal",
    "sars": "virus", "mers-cov": "virus", "mers": "virus", "influenza": "virus", "varicella": "virus",
    "herpes": "virus",
    "streptococcus": "bacteria", "klebsiella": "bacteria", "legionella": "bacteria",
    "e.coli": "bacteria", "chlamydophila": "bacteria", "mycoplasma": "bacteria",
    "staphylococcus": "bacteria", "nocardia": "bacteria",
    "pneumocystis": "fungal", "aspergillosis": "fungal", "histoplasmosis": "fungal",
    "tuberculosis": "tuberculosis",
}
CATEGORIES = {"viral": "virus", "bacterial": "bacteria", "fungal": "fungal"}  # hierarchy level 2


UNMAPPED = {"todo", "unknown"}  # placeholders in the metadata, not findings


def finding_label(finding: str) -> str | None:
    """Pneumonia/Viral/COVID-19 -> covid, .../Bacterial/... -> bacteria, No Finding -> normal.

    Older flat findings go through LEAVES; the first of several ("COVID-19, ARDS") decides. Any
    other leaf becomes its own label (Pneumonia/Lipoid -> lipoid), for data.label_map to merge.
    None: no finding recorded (todo, Unknown, empty).
    """
    parts = [p.strip().lower() for p in finding.split(",")[0].split("/") if p.strip()]
    if not parts or parts[-1] in UNMAPPED:
        return None
    if "covid-19" in parts:
        return "covid"
    for p in parts:
        if p in CATEGORIES:
            return CATEGORIES[p]
    return LEAVES.get(parts[-1], parts[-1].replace(" ", "_"))


def _is_cohen(root: Path) -> bool:
    meta = root / "metadata.csv"
    if not meta.is_file():
        return False
    with meta.open(encoding="utf-8", errors="replace") as f:
        header = [c.strip().strip('"').lower() for c in f.readline().split(",")]
    return "finding" in header and "filename" in header


@register(
    "cohen",
    summary="Cohen covid-chestxray-dataset (finding leaves -> covid, virus, bacteria, fungal, normal, ...)",
    folder="covid-chestxray-dataset/ (holds metadata.csv and images/)",
    detect=_is_cohen,
)
def load_cohen(root: Path, options: SourceOptions) -> pd.DataFrame:
    """One row per metadata row; CT, excluded views and unmapped findings carry a skip reason."""
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found; point data.root at covid-chestxray-dataset/")
    table = pd.read_csv(check_size(meta, MAX_TABLE_BYTES, "a metadata table"), dtype=str, keep_default_na=False)
    table = table.loc[:, [not c.lower().startswith("unnamed") for c in table.columns]]
    table.columns = [c.strip().lower() for c in table.columns]
    require_columns(meta, table.columns, ("patientid", "finding", "filename"), "is this Cohen's metadata.csv?")
    rows = []
    for r in table.to_dict("records"):
        folder = r.get("folder", "") or "images"  # older releases keep every image in images/
        view, modality = r.get("view", "").strip(), r.get("modality", "").strip()
        label = finding_label(r["finding"])
        if modality and not options.modality_allowed(modality):
            skip = f"modality {modality} is not in data.modalities {list(options.modalities)}"
        elif view and not options.view_allowed(view):
            skip = f"view {view} is not in data.views {list(options.views)}"
        elif label is None:
            skip = f"finding {r['finding']!r} is outside the label map (no finding recorded)"
        else:
            skip = ""
        rows.append({
            "path": str((root / folder / r["filename"].strip()).absolute()),
            "label": label or r["finding"],
            "patient_id": r["patientid"].strip() or Path(r["filename"]).stem,
            "view": view,
            "modality": modality,
            "skip": skip,
        })
    return make_table(rows, "cohen", root)
