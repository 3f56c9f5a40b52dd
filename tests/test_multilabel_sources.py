"""The multi-label benchmarks (NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG) read into the sample table
from fixture trees with their real names and quirks (tests/multilabel_trees.py)."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import multilabel_trees as trees
import padchest_rsna_trees as rsna_padchest
import pandas as pd
import pytest

from cxrlab.datamodules.sources import (
    SourceOptions,
    detect_source,
    get_source,
    load_table,
    read_source,
)
from cxrlab.datamodules.sources.findings import (
    NO_FINDING,
    finding_column,
    finding_names,
    summary_label,
)
from cxrlab.experiments.cli.main import main


def read(root: Path, source: str = "auto", **options: Any) -> Any:
    """read_source with the skip warnings collected instead of printed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_source(source, root, SourceOptions(**options))


def by_name(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """File name -> its row."""
    return {Path(r["path"]).name: r for r in table.to_dict("records")}


def counts(table: pd.DataFrame, findings: tuple[str, ...], value: float) -> dict[str, int]:
    """Per finding, how many rows hold `value` in its finding column."""
    return {f: int((table[finding_column(f)] == value).sum()) for f in findings}


def assert_summaries(table: pd.DataFrame) -> None:
    """`label` is the summary of the finding columns, row by row."""
    for r in table.to_dict("records"):
        values = {f: r[finding_column(f)] for f in finding_names(table)}
        assert r["label"] == summary_label(values)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("multilabel")


@pytest.fixture(scope="module")
def chexpert(base: Path) -> Path:
    return trees.write_chexpert(base / "chexpert")


@pytest.fixture(scope="module")
def mimic(base: Path) -> Path:
    return trees.write_mimic(base / "mimic")


def test_registered_with_their_own_findings() -> None:
    assert get_source("nih").findings == trees.NIH_FINDINGS
    assert get_source("chexpert").findings == trees.CHEXPERT_FINDINGS
    assert get_source("mimic_cxr_jpg").findings == trees.MIMIC_FINDINGS
    assert all(get_source(n).official_split for n in ("nih", "chexpert", "mimic_cxr_jpg"))


@pytest.mark.parametrize("version", ["2017", "2020"])
def test_nih(version: str, base: Path) -> None:
    root = trees.write_nih(base / f"nih{version}", version)
    assert detect_source(root) == "nih"
    loaded = read(root)
    t = loaded.table
    assert finding_names(t) == list(trees.NIH_FINDINGS)
    assert not any(c.startswith("Unnamed") or c.startswith("OriginalImage") for c in t.columns)
    rows = by_name(t)
    assert sorted(rows) == sorted(r[0] for r in trees.NIH_KEPT)
    assert counts(t, trees.NIH_FINDINGS, 1.0) == trees.NIH_POSITIVES
    assert t[[finding_column(f) for f in trees.NIH_FINDINGS]].isin([0.0, 1.0]).all().all()  # never -1 or NaN
    assert_summaries(t)
    assert rows["00000002_000.png"]["label"] == NO_FINDING
    assert all(rows["00000002_000.png"][finding_column(f)] == 0.0 for f in trees.NIH_FINDINGS)
    assert rows["00000005_002.png"]["label"] == "Atelectasis|Effusion|Infiltration"
    for name, _, view in trees.NIH_KEPT:
        r = rows[name]
        assert (r["patient_id"], r["view"]) == (trees.nih_patient(name), view)
        expected_split = "test" if r["patient_id"] in trees.NIH_TEST_PATIENTS else "train"
        assert r["official_split"] == expected_split
    assert (t.groupby("patient_id").size()["1"]) == 3
    assert {Path(p).parent.parent.name for p in t["path"]} == {"images_001", "images_002"}
    assert "00000013_000.png" in " ".join(loaded.skipped["error"])
    # Boxes: x, y, w, h from the 3rd-6th fields and the finding (Infiltrate read as Infiltration).
    assert json.loads(rows["00000005_002.png"]["lesion_boxes"]) == [[4.0, 8.0, 12.0, 10.0, "Atelectasis"],
                                                                    [33.898305084746, 12.5, 20.0, 18.0, "Infiltration"]]
    assert json.loads(rows["00000012_000.png"]["lesion_boxes"]) == [[40.0, 36.0, 8.5, 9.25, "Mass"]]
    boxed = {name for name, *_ in trees.NIH_BOXES}
    assert set(t.loc[t["lesion_boxes"].notna(), "path"].map(lambda p: Path(p).name)) == boxed


def test_nih_images_in_one_folder(base: Path, tmp_path: Path) -> None:
    """The NIH tarballs unpack every image into one images/ folder."""
    root = shutil.copytree(trees.write_nih(base / "nih_flat"), tmp_path / "nih")
    (root / "images").mkdir()
    for sub in ("images_001", "images_002"):
        for f in (root / sub / "images").iterdir():
            f.rename(root / "images" / f.name)
        shutil.rmtree(root / sub)
    with pytest.warns(UserWarning, match="00000013_000.png: image not found"):
        t = load_table("nih", root)
    assert len(t) == len(trees.NIH_KEPT) and (t["path"].map(lambda p: Path(p).parent.name) == "images").all()


def test_chexpert(chexpert: Path) -> None:
    assert detect_source(chexpert) == detect_source(chexpert.parent) == "chexpert"
    loaded = read(chexpert)
    t = loaded.table
    assert finding_names(t) == list(trees.CHEXPERT_FINDINGS)
    frontal = [r for r in trees.CHEXPERT_ROWS if r[4] == "Frontal"]
    assert len(t) == len(frontal) and t["path"].map(lambda p: Path(p).is_file()).all()
    assert counts(t, trees.CHEXPERT_FINDINGS, 1.0) == trees.CHEXPERT_POSITIVES
    assert counts(t, trees.CHEXPERT_FINDINGS, -1.0) == trees.CHEXPERT_UNCERTAIN
    nan = {f: int(t[finding_column(f)].isna().sum()) for f in trees.CHEXPERT_FINDINGS}
    assert nan == trees.CHEXPERT_BLANK
    assert_summaries(t)
    rows = {r["path"].split(f"{trees.CHEXPERT_DIR}/")[1]: r for r in t.to_dict("records")}
    first = rows["train/patient00001/study1/view1_frontal.jpg"]
    assert first["label"] == "No Finding|Support Devices" and math.isnan(first["finding:Cardiomegaly"])
    uncertain = rows["train/patient00002/study2/view1_frontal.jpg"]
    assert uncertain["finding:Lung Lesion"] == -1.0 and uncertain["label"] == NO_FINDING  # nothing positive
    for row in frontal:
        r = rows[trees.chexpert_path(row).split("/", 1)[1]]
        assert (r["patient_id"], r["view"]) == (row[1], row[5])
        assert r["official_split"] == {"train": "train", "valid": "val"}[row[0]]
    valid = t.loc[t["official_split"] == "val", [finding_column(f) for f in trees.CHEXPERT_FINDINGS]]
    assert valid.isin([0.0, 1.0]).all().all()  # valid.csv: no blanks, no -1
    reasons = " ".join(loaded.skipped["error"])
    assert len(loaded.skipped) == 3 and "view Lateral is not in data.views" in reasons
    with_lateral = read(chexpert, views=("AP", "PA", "Lateral")).table
    assert len(with_lateral) == len(trees.CHEXPERT_ROWS)
    assert (with_lateral["path"].str.endswith("_lateral.jpg") == (with_lateral["view"] == "Lateral")).all()


def test_mimic(mimic: Path) -> None:
    assert detect_source(mimic) == detect_source(mimic.parent) == "mimic_cxr_jpg"
    loaded = read(mimic)
    t = loaded.table
    assert finding_names(t) == list(trees.MIMIC_FINDINGS)
    assert counts(t, trees.MIMIC_FINDINGS, 1.0) == trees.MIMIC_POSITIVES
    assert counts(t, trees.MIMIC_FINDINGS, -1.0) == trees.MIMIC_UNCERTAIN
    assert_summaries(t)
    images = {d: img for d, *img in trees.mimic_images()}
    kept = {d for d, (_, _, _, view, cells) in images.items() if view in ("PA", "AP") and cells}
    assert {Path(p).stem for p in t["path"]} == kept
    for r in t.to_dict("records"):
        subject, study, split, view, _ = images[Path(r["path"]).stem]
        assert (r["patient_id"], r["study_id"], r["view"]) == (subject, study, view)
        assert r["official_split"] == {"train": "train", "validate": "val", "test": "test"}[split]
        assert r["path"].endswith(f"files/p{subject[:2]}/p{subject}/s{study}/{Path(r['path']).name}")
    # Every image of a study carries the study's labels.
    study = t[t["study_id"] == "53911762"]
    assert len(study) == 2 and (study["label"] == NO_FINDING).all()
    assert (study["finding:No Finding"] == 1.0).all() and study["finding:Edema"].isna().all()
    assert set(t["official_split"]) == {"train", "val", "test"}
    reasons = " ".join(loaded.skipped["error"])
    assert "ViewPosition is empty" in reasons
    assert "view LATERAL is not in data.views" in reasons and "view LL is not in data.views" in reasons
    assert "study s59988438 has no row in mimic-cxr-2.0.0-chexpert.csv.gz" in reasons
    views = [v for _, _, _, vs, _ in trees.MIMIC_STUDIES for v in vs]
    assert len(loaded.skipped) + len(t) == len(views)


def test_mimic_gunzipped_tables(mimic: Path, tmp_path: Path) -> None:
    """Tables gunzipped in place (.csv) read the same."""
    root = shutil.copytree(mimic, tmp_path / "2.0.0")
    for gz in root.glob("*.csv.gz"):
        pd.read_csv(gz, dtype=str, keep_default_na=False).to_csv(gz.with_suffix(""), index=False)
        gz.unlink()
    assert detect_source(root) == "mimic_cxr_jpg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = load_table("mimic_cxr_jpg", root)
    assert counts(t, trees.MIMIC_FINDINGS, 1.0) == trees.MIMIC_POSITIVES



@pytest.mark.parametrize(("source", "table", "column"), [
    ("nih", "Data_Entry_2017.csv", "Finding Labels"),
    ("chexpert", "CheXpert-v1.0-small/train.csv", "Path"),
    ("mimic_cxr_jpg", "mimic-cxr-jpg/2.0.0/mimic-cxr-2.0.0-chexpert.csv.gz", "Edema"),
    ("padchest", rsna_padchest.PADCHEST_CSV, "Labels"),
    ("rsna_pneumonia", "stage_2_train_labels.csv", "Target"),
])
def test_a_table_without_a_column_is_one_line(
    tmp_path: Path, source: str, table: str, column: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A label table that lost a column names the file, the column and what the file should be."""
    writer = {"nih": trees.write_nih, "chexpert": trees.write_chexpert, "mimic_cxr_jpg": trees.write_mimic,
              "padchest": rsna_padchest.write_padchest, "rsna_pneumonia": rsna_padchest.write_rsna}[source]
    root = writer(tmp_path / source)
    path = next(p for p in root.rglob(Path(table).name) if str(p).endswith(table))
    pd.read_csv(path, dtype=str).drop(columns=[column]).to_csv(path, index=False)
    assert main(["data", "inspect", "--data.source", source, "--data.root", str(root), "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(path) in line and f"missing column(s) {column}" in line and "is this" in line
