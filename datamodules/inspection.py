"""`cxrlab data inspect`: what a dataset holds before anything trains on it.

Counts per class, split, source and patient; per-class size, bit depth and mode; unreadable files;
byte-identical duplicates; patients that leak across the official split; and confounder warnings
when a property that is not anatomy (file size, width, height, bit depth, mode) tells classes apart.
"""

from __future__ import annotations

import hashlib
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from cxrlab.config import DataConfig
from cxrlab.datamodules.image_header import read_header
from cxrlab.datamodules.images import Decoding, read_image
from cxrlab.datamodules.sources import load_source
from cxrlab.datamodules.sources.findings import (
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    UNCERTAIN,
    finding_column,
    finding_names,
    is_multilabel,
)
from cxrlab.datamodules.splits import split_leaks

NUMERIC = {"file_kb": "file size (KB)", "width": "width (px)", "height": "height (px)"}
CATEGORICAL = {"bits": "bit depth", "mode": "mode"}
SEPARATION = 0.9  # pairwise AUC (numeric) or share of rows told apart (categorical) that warns
MIN_PER_CLASS = 3  # fewer images than this in a class: no confounder verdict on it


@dataclass
class Inspection:
    """The scanned table (one row per image with its properties) and everything derived from it."""

    source: str
    images: pd.DataFrame
    skipped: pd.DataFrame
    duplicates: pd.DataFrame
    leaks: pd.DataFrame
    min_image_size: int
    confounders: list[str] = field(default_factory=list)

    @property
    def too_small(self) -> pd.DataFrame:
        """Images training skips for a side below data.min_image_size: path, width, height."""
        small = self.images[["width", "height"]].min(axis=1) < self.min_image_size
        return self.images.loc[small, ["path", "width", "height"]]

    @property
    def unreadable(self) -> pd.DataFrame:
        """Images that failed to decode: path, error."""
        return self.images.loc[self.images["error"] != "", ["path", "error"]]


def _scan_one(path: str, decoding: Decoding) -> dict[str, Any]:
    """File size, hash, header properties and whether it decodes."""
    p = Path(path)
    row: dict[str, Any] = {"file_kb": np.nan, "sha1": "", "width": np.nan, "height": np.nan,
                           "mode": "", "bits": np.nan, "error": ""}
    try:
        data = p.read_bytes()
        row["file_kb"] = len(data) / 1024
        row["sha1"] = hashlib.sha1(data).hexdigest()  # noqa: S324  (identity, not security)
        h = read_header(p)
        row.update(width=h.width, height=h.height, mode=h.mode, bits=h.bits)
        read_image(p, decoding)
    except Exception as e:  # noqa: BLE001  (every failure is reported per file, never raised)
        row["error"] = str(e) if str(e).startswith(str(p)) else f"{p}: {type(e).__name__}: {e}"
    return row


def scan_images(paths: list[str], decoding: Decoding, workers: int = 4, progress: bool = True) -> pd.DataFrame:
    """One property row per path, in order (threads: decoding and hashing release the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(tqdm(pool.map(lambda p: _scan_one(p, decoding), paths), total=len(paths),
                         desc="inspect", unit="img", disable=not progress))
    return pd.DataFrame(rows, index=range(len(paths)))


def duplicate_files(images: pd.DataFrame) -> pd.DataFrame:
    """Byte-identical files: sha1, copies, labels, paths (one row per group)."""
    hashed = images[images["sha1"] != ""]
    groups = hashed.groupby("sha1").filter(lambda g: len(g) > 1).groupby("sha1")
    return pd.DataFrame(
        [{"sha1": k, "copies": len(g), "labels": ",".join(sorted(set(g["label"]))),
          "paths": " | ".join(g["path"])} for k, g in groups],
        columns=["sha1", "copies", "labels", "paths"],
    )


def _range(values: pd.Series) -> str:
    return f"{values.min():.0f}-{values.max():.0f}"


def confounder_warnings(images: pd.DataFrame) -> list[str]:
    """One line per (property, class pair) where a non-anatomical property separates the classes."""
    ok = images[images["error"] == ""]
    counts = ok["label"].value_counts()
    classes = sorted(c for c, n in counts.items() if n >= MIN_PER_CLASS)
    out = []
    for a, b in itertools.combinations(classes, 2):
        pa, pb = ok[ok["label"] == a], ok[ok["label"] == b]
        for col, name in NUMERIC.items():
            x = pd.concat([pa[col], pb[col]]).to_numpy(float)
            if np.ptp(x) == 0:
                continue
            auc = roc_auc_score([0] * len(pa) + [1] * len(pb), x)
            sep = max(auc, 1 - auc)
            if sep >= SEPARATION:
                out.append(
                    f"confounder: {name} separates {a} ({_range(pa[col])}) from {b} "
                    f"({_range(pb[col])}), AUC {sep:.2f}; a model can learn the label from it"
                )
        for col, name in CATEGORICAL.items():
            va, vb = pa[col].astype(str), pb[col].astype(str)
            if pd.concat([va, vb]).nunique() < 2:
                continue
            only = (~va.isin(set(vb))).sum() + (~vb.isin(set(va))).sum()
            share = only / (len(va) + len(vb))
            if share >= SEPARATION:
                out.append(
                    f"confounder: {name} separates {a} ({dict(va.value_counts())}) from {b} "
                    f"({dict(vb.value_counts())}), {share:.0%} of images told apart; a model can "
                    "learn the label from it"
                )
    return out


def finding_confounders(images: pd.DataFrame) -> list[str]:
    """Multi-label: confounder_warnings of each finding's present against absent images."""
    out = []
    for name in finding_names(images):
        values = images[finding_column(name)]
        known = images[values.isin((POSITIVE, NEGATIVE))]
        told = known.assign(label=np.where(known[finding_column(name)] == POSITIVE, name, f"no {name}"))
        out += confounder_warnings(told)
    return out


def finding_counts(images: pd.DataFrame) -> pd.DataFrame:
    """Multi-label: per finding, images present / absent / uncertain / not stated, and the uncertain share."""
    rows = []
    for name in finding_names(images):
        v = images[finding_column(name)]
        n_uncertain = int((v == UNCERTAIN).sum())
        rows.append({"finding": name, "present": int((v == POSITIVE).sum()), "absent": int((v == NEGATIVE).sum()),
                     "uncertain": n_uncertain, "not stated": int(v.isna().sum()),
                     "uncertain share": round(n_uncertain / len(v), 3) if len(v) else 0.0})
    return pd.DataFrame(rows).set_index("finding")


def cooccurrence_table(images: pd.DataFrame) -> pd.DataFrame:
    """Multi-label: images where both findings are present (the diagonal: each alone or not)."""
    names = finding_names(images)
    present = (images[[finding_column(n) for n in names]] == POSITIVE).astype(int).to_numpy()
    return pd.DataFrame(present.T @ present, index=names, columns=names)


def property_stats(images: pd.DataFrame) -> pd.DataFrame:
    """Per class (multi-label: films with any finding against films with none): images,
    width/height/file-size ranges and medians, bit depths and modes."""
    ok = images[images["error"] == ""]
    if is_multilabel(ok):
        ok = ok.assign(label=np.where(ok["label"] == NO_FINDING, NO_FINDING, "any finding"))
    rows = []
    for label, g in ok.groupby("label"):
        row: dict[str, Any] = {"label": label, "images": len(g)}
        for col in NUMERIC:
            digits = 1 if col == "file_kb" else 0
            for stat in ("min", "median", "max"):
                row[f"{col}_{stat}"] = round(float(g[col].agg(stat)), digits)
        row["bits"] = ",".join(f"{int(b)}:{n}" for b, n in g["bits"].value_counts().sort_index().items())
        row["modes"] = ",".join(f"{m}:{n}" for m, n in g["mode"].value_counts().items())
        rows.append(row)
    return pd.DataFrame(rows)


def count_tables(images: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Images per class x official split, per class x source, and patients per class."""
    if is_multilabel(images):
        return _finding_tables(images)
    out = {}
    if "official_split" in images.columns:
        out["class_by_split"] = pd.crosstab(images["label"], images["official_split"].replace("", "none"), margins=True)
    out["class_by_source"] = pd.crosstab(images["label"], images["source"], margins=True)
    per_patient = images.groupby("patient_id").size()
    patients = images.groupby("label")["patient_id"].nunique().rename("patients")
    out["patients"] = pd.concat([images["label"].value_counts().rename("images"), patients], axis=1)
    out["images_per_patient"] = per_patient.describe()[["min", "50%", "max"]].rename({"50%": "median"}).to_frame("images")
    if "view" in images.columns:
        out["views"] = _views(images)
    return out


def _views(images: pd.DataFrame) -> pd.DataFrame:
    return images["view"].replace("", "not recorded").value_counts().to_frame("images")


def _finding_tables(images: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Multi-label counts: per finding (present, absent, uncertain, not stated), present per official
    split, co-occurrence, views and images per patient (a set of findings per image is no class)."""
    out = {"findings": finding_counts(images)}
    if "official_split" in images.columns:
        split = images["official_split"].replace("", "none")
        out["findings_by_split"] = pd.DataFrame(
            {s: (images.loc[split == s, [finding_column(n) for n in finding_names(images)]] == POSITIVE).sum().to_numpy()
             for s in sorted(split.unique())}, index=finding_names(images))
    out["finding_cooccurrence"] = cooccurrence_table(images)
    if "view" in images.columns:
        out["views"] = _views(images)
    out["images_per_patient"] = images.groupby("patient_id").size().describe()[["min", "50%", "max"]].rename(
        {"50%": "median"}).to_frame("images")
    return out


def inspect_dataset(data: DataConfig, workers: int = 4, progress: bool = True) -> Inspection:
    """Read a data config's source, scan every image, and derive the report's tables."""
    loaded = load_source(data)
    table = loaded.table.reset_index(drop=True)
    if data.label_map:
        table = table.assign(label=table["label"].map(lambda v: data.label_map.get(v, v)))
    scanned = scan_images(table["path"].tolist(), Decoding.from_data(data), workers, progress)
    images = pd.concat([table, scanned], axis=1)
    leaks = pd.DataFrame(columns=["patient_id", "splits", "images"])
    if "official_split" in images.columns:
        leaks = split_leaks(images[images["official_split"] != ""], "official_split")
    # Multi-label labels are sets: each finding is told apart from its absence, not one set from another.
    confounders = finding_confounders(images) if is_multilabel(images) else confounder_warnings(images)
    return Inspection(loaded.source, images, loaded.skipped, duplicate_files(images), leaks,
                      data.min_image_size, confounders)


def report_text(ins: Inspection) -> str:
    """The human-readable report that `cxrlab data inspect` prints."""
    images = ins.images
    lines = [f"source {ins.source}: {len(images)} images, {images['patient_id'].nunique()} patients, "
             f"{len(ins.skipped)} rows skipped, {len(ins.unreadable)} unreadable"]
    for name, t in count_tables(images).items():
        lines += ["", f"== {name.replace('_', ' ')}", t.to_string()]
    stats = property_stats(images)
    if len(stats):
        lines += ["", "== image properties per class", stats.to_string(index=False, float_format=lambda v: f"{v:g}")]
    if len(ins.skipped):
        reasons = ins.skipped["error"].str.split(": ", n=1).str[-1].str.split(";").str[0].value_counts()
        lines += ["", f"== skipped rows ({len(ins.skipped)})", reasons.to_string()]
    if len(ins.unreadable):
        lines += ["", f"== unreadable files ({len(ins.unreadable)})", *ins.unreadable["error"].head(20)]
    if len(ins.too_small):
        lines += ["", f"== images below data.min_image_size={ins.min_image_size} px, which training skips "
                  f"({len(ins.too_small)})"]
        lines += [f"  {r.path}: {r.width:.0f}x{r.height:.0f}" for r in ins.too_small.head(20).itertuples()]
    lines += ["", f"== exact duplicate files: {len(ins.duplicates)} group(s), "
              f"{int(ins.duplicates['copies'].sum() - len(ins.duplicates)) if len(ins.duplicates) else 0} redundant copies"]
    lines += [f"  {r.copies}x [{r.labels}] {r.paths}" for r in ins.duplicates.head(20).itertuples()]
    if "official_split" in images.columns:
        lines += ["", f"== patients across the official split: {len(ins.leaks)} "
                  f"({int(ins.leaks['images'].sum()) if len(ins.leaks) else 0} images)"]
        lines += [f"  {r.patient_id}: {r.splits} ({r.images} images)" for r in ins.leaks.head(20).itertuples()]
    lines += ["", f"== confounder warnings: {len(ins.confounders)}", *(f"WARNING {w}" for w in ins.confounders)]
    return "\n".join(lines)


def class_balance_chart(images: pd.DataFrame, path: Path) -> Path:
    """A bar chart of images per class (stacked by source when there are several)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if is_multilabel(images):  # images with each finding (one film counts under each it has)
        counts = finding_counts(images)[["present"]].rename(columns={"present": images["source"].iloc[0]})
    else:
        counts = pd.crosstab(images["label"], images["source"])
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(counts)), 3.5))
    counts.plot.bar(stacked=True, ax=ax, legend=counts.shape[1] > 1, rot=0)
    for i, total in enumerate(counts.sum(axis=1)):
        ax.text(i, total, str(int(total)), ha="center", va="bottom")
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_title("class balance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_inspection(ins: Inspection, out: Path) -> list[Path]:
    """report.txt, images.csv, counts, duplicates, unreadable, skipped, leaks and the chart."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "images.csv": ins.images, "duplicates.csv": ins.duplicates, "unreadable.csv": ins.unreadable,
        "skipped_images.csv": ins.skipped, "leaks.csv": ins.leaks, "properties.csv": property_stats(ins.images),
    }
    written = []
    for name, frame in files.items():
        frame.to_csv(out / name, index=False)
        written.append(out / name)
    for name, frame in count_tables(ins.images).items():
        frame.to_csv(out / f"{name}.csv")
        written.append(out / f"{name}.csv")
    (out / "report.txt").write_text(report_text(ins) + "\n")
    written += [out / "report.txt", class_balance_chart(ins.images, out / "class_balance.png")]
    return written
