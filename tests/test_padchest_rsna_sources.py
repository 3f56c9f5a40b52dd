"""PadChest and RSNA Pneumonia read as downloaded (fixture trees from tests/padchest_rsna_trees.py):
detection, finding counts, skips with their reasons, 16-bit PNG and DICOM decoding, boxes."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import padchest_rsna_trees as trees
import pandas as pd
import pytest
from PIL import Image

from cxrlab.datamodules.images import read_image
from cxrlab.datamodules.sources import (
    SourceOptions,
    detect_source,
    get_source,
    load_table,
    read_source,
)
from cxrlab.datamodules.sources.findings import NO_FINDING, finding_column, finding_names
from cxrlab.datamodules.sources.padchest import BROKEN_IMAGES, FINDINGS, parse_labels, term_findings


def read(root: Path, source: str = "auto", **options: Any) -> Any:
    """read_source with the skip warnings collected instead of printed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_source(source, root, SourceOptions(**options))


def by_name(table: pd.DataFrame) -> dict[str, pd.Series]:
    return {Path(r["path"]).name: r for _, r in table.iterrows()}


def positives(table: pd.DataFrame) -> dict[str, int]:
    counts = {f: int((table[finding_column(f)] == 1.0).sum()) for f in finding_names(table)}
    return {f: n for f, n in counts.items() if n}


@pytest.fixture(scope="module")
def padchest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trees.write_padchest(tmp_path_factory.mktemp("padchest"))


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trees.write_rsna(tmp_path_factory.mktemp("rsna"))


# --------------------------------------------------------------------------- PadChest

def test_padchest_detected_and_counted(padchest: Path) -> None:
    assert detect_source(padchest) == "padchest"
    assert get_source("padchest").findings == FINDINGS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = load_table("padchest", padchest)
    assert finding_names(t) == list(FINDINGS)
    assert sorted(by_name(t)) == sorted(trees.PADCHEST_KEPT)
    assert positives(t) == trees.PADCHEST_EXPECTED
    assert t[[finding_column(f) for f in FINDINGS]].isin([0.0, 1.0]).all().all()  # never NaN or -1
    for name, row in by_name(t).items():
        expected = trees.PADCHEST_KEPT[name]
        assert row["label"] == ("|".join(sorted(expected.findings)) or NO_FINDING)
        assert row["patient_id"] == expected.patient
        assert Path(row["path"]).parent.name == str(expected.image_dir)
    views = dict(zip(t["path"].map(lambda p: Path(p).name), t["view"], strict=True))
    assert views[trees.padchest_id(21)] == "AP Supine"  # Projection AP_horizontal
    assert set(t["label_method"]) == {"Physician", "RNN_model"}
    assert (t.groupby("patient_id").size()["P001"]) == 2


def test_padchest_skips_name_the_file_and_the_reason(padchest: Path) -> None:
    skipped = read(padchest).skipped
    errors = dict(zip(skipped["path"].map(lambda p: Path(p).name), skipped["error"], strict=True))
    assert sorted(errors) == sorted(trees.PADCHEST_SKIPPED)
    for name, row in trees.PADCHEST_SKIPPED.items():
        assert name in errors[name] and row.skip in errors[name], errors[name]
    assert trees.PADCHEST_BROKEN_ID in BROKEN_IMAGES and len(BROKEN_IMAGES) == 21
    assert "known broken" in errors[trees.PADCHEST_BROKEN_ID]
    assert "view L is not in data.views" in errors[trees.padchest_id(23)]
    assert "file is missing" in errors[trees.padchest_id(25)]
    # data.views opens the filter: the lateral row is kept when L is listed.
    lateral = read(padchest, views=("PA", "AP", "AP Supine", "L")).table
    assert trees.padchest_id(23) in by_name(lateral)


def test_padchest_png16_decodes(padchest: Path) -> None:
    path = padchest / "0" / trees.padchest_id(1)
    with Image.open(path) as img:
        assert img.mode == "I;16"
    arr = read_image(path)
    assert arr.shape == (trees.SIDE, trees.SIDE) and arr.dtype == np.float32
    assert arr.std() > 0.01 and len(np.unique(arr)) > 256  # more levels than 8 bits hold
    assert 0.0 <= arr.min() and arr.max() <= 1.0


def test_padchest_gzipped_csv_and_flat_folder(tmp_path: Path, padchest: Path) -> None:
    gz = trees.write_padchest(tmp_path / "gz", gz=True)
    assert not (gz / trees.PADCHEST_CSV).exists() and detect_source(gz) == "padchest"
    assert positives(read(gz).table) == trees.PADCHEST_EXPECTED
    flat = shutil.copytree(padchest, tmp_path / "flat")  # every PNG in the root, as torchxrayvision reads it
    for folder in [d for d in flat.iterdir() if d.is_dir()]:
        for f in folder.iterdir():
            f.rename(flat / f.name)
        folder.rmdir()
    assert sorted(by_name(read(flat).table)) == sorted(trees.PADCHEST_KEPT)


def test_padchest_label_terms() -> None:
    assert parse_labels("['Pneumonia', ' pleural effusion ']") == ["pneumonia", "pleural effusion"]
    assert parse_labels("[]") == parse_labels("['']") == []
    for bad in ("", "nan", "pneumonia", "__import__('os').system('true')", "['a'"):
        assert parse_labels(bad) is None, bad
    assert term_findings("loculated pleural effusion") == {"Effusion"}
    assert term_findings("pericardial effusion") == term_findings("pseudonodule") == frozenset()
    assert term_findings("multiple nodules") == {"Nodule"}
    assert term_findings("air bronchogram") == {"Consolidation", "Infiltration"}
    assert term_findings("normal") == term_findings("copd signs") == frozenset()


# --------------------------------------------------------------------------- RSNA Pneumonia

def test_rsna_detected_and_counted(rsna: Path) -> None:
    assert detect_source(rsna) == "rsna_pneumonia"
    assert get_source("rsna_pneumonia").findings == ("Lung Opacity",)
    loaded = read(rsna)
    t = loaded.table
    assert positives(t) == trees.RSNA_EXPECTED
    assert sorted(t["patient_id"]) == sorted(trees.RSNA_KEPT) and t["patient_id"].is_unique
    assert trees.RSNA_TEST_ONLY not in set(t["patient_id"])  # stage_2_test_images/ is never read
    assert t["detail"].value_counts().to_dict() == trees.RSNA_DETAILS
    assert t["view"].value_counts().to_dict() == trees.RSNA_VIEWS  # from the DICOM headers
    assert set(t["label"]) == {"Lung Opacity", NO_FINDING}
    (missing,) = trees.RSNA_MISSING
    assert len(loaded.skipped) == 1 and f"{missing}.dcm: listed in the metadata but the file is missing" in loaded.skipped["error"].iloc[0]


def test_rsna_boxes_per_patient(rsna: Path) -> None:
    t = read(rsna).table
    for _, row in t.iterrows():
        expected = trees.RSNA_KEPT[row["patient_id"]]
        boxes = json.loads(row["lesion_boxes"])
        assert boxes == [list(b) for b in expected.boxes]
        assert (row["finding:Lung Opacity"] == 1.0) == bool(expected.boxes)
    assert t["lesion_boxes"].map(lambda s: len(json.loads(s))).sum() == sum(len(i.boxes) for i in trees.RSNA_KEPT.values())


def test_rsna_dicom_decodes_and_views_filter(rsna: Path) -> None:
    img = trees.RSNA_IMAGES[0]
    arr = read_image(rsna / "stage_2_train_images" / f"{trees.rsna_id(img.n)}.dcm")
    assert arr.shape == (trees.SIDE, trees.SIDE) and arr.std() > 0.05
    x, y, w, h = img.boxes[0]
    assert arr[y : y + h, x : x + w].mean() > arr.mean()  # the opacity is drawn where its box says
    pa_only = read(rsna, views=("PA",))
    assert set(pa_only.table["view"]) == {"PA"} and len(pa_only.table) == trees.RSNA_VIEWS["PA"]
    assert pa_only.skipped["error"].str.contains("view AP is not in data.views").sum() == trees.RSNA_VIEWS["AP"]
