"""Hostile dataset input: each case is skipped, warned about and listed in skipped_images.csv,
or with data.strict stops with one line naming the file; data-root escapes are refused."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import dataset_trees as trees
import pandas as pd
import pytest
import torch

from cxrlab.callbacks.explanations.focus import mask_focus
from cxrlab.datamodules.datamodule import CXRDataModule
from cxrlab.datamodules.probe import load_image_set


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hostile")
    return {
        "coronahack": trees.write_coronahack(base / "coronahack"),
        "radiography": trees.write_covid_radiography(base / "radiography"),
        "cohen": trees.write_cohen(base / "cohen"),
        "kermany": trees.write_kermany(base / "kermany"),
    }


def copy(pristine: dict[str, Path], name: str, tmp_path: Path) -> Path:
    """A private copy of one fixture tree, same relative layout (data.root inside it)."""
    src = pristine[name]
    top = src if name == "coronahack" else src.parent
    dst = shutil.copytree(top, tmp_path / name)
    return dst if name == "coronahack" else dst / src.name


def make(make_config: Any, root: Path, **data: Any) -> CXRDataModule:
    cfg = make_config({"data.root": str(root), "data.num_workers": 0, "data.split": [0.5, 0.5],
                       "data.min_image_size": 64, "data.image_size": 32, **{f"data.{k}": v for k, v in data.items()}})
    return CXRDataModule(cfg.data, seed=0)


def skipped_and_strict(make_config: Any, root: Path, needle: str, reason: str) -> CXRDataModule:
    """The row whose path contains `needle` is skipped with `reason`; strict names it instead."""
    dm = make(make_config, root)
    with pytest.warns(UserWarning, match="skipped"):
        dm.prepare_table()
    hits = dm.skipped[dm.skipped["path"].str.contains(needle, regex=False)]
    assert len(hits) == 1 and reason in hits["error"].iloc[0], dm.skipped.to_dict("records")
    assert not dm.table["path"].str.contains(needle, regex=False).any() or "mask" in reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"data.strict is on") as e:
            make(make_config, root, strict=True).prepare_table()
    assert "\n" not in str(e.value)
    return dm


def test_metadata_row_without_its_file(pristine: dict[str, Path], tmp_path: Path, make_config: Any) -> None:
    root = copy(pristine, "coronahack", tmp_path)
    gone = "person2_bacteria_2.jpeg"
    next(root.rglob(gone)).unlink()
    skipped_and_strict(make_config, root, gone, "listed in the metadata but the file is missing")


def test_xlsx_row_without_its_file(pristine: dict[str, Path], tmp_path: Path, make_config: Any) -> None:
    root = copy(pristine, "radiography", tmp_path)
    trees.write_xlsx(root / "COVID.metadata.xlsx", [f"COVID-{i}" for i in range(1, 7)], "https://example.org/c")
    dm = make(make_config, root)
    with pytest.warns(UserWarning, match="skipped"):
        dm.prepare_table()
    assert dm.skipped["path"].str.endswith("COVID-6.png").sum() == 1


def test_missing_mask_keeps_the_image_without_focus(pristine: dict[str, Path], tmp_path: Path, make_config: Any) -> None:
    root = copy(pristine, "radiography", tmp_path)
    (root / "Normal" / "masks" / "Normal-2.png").unlink()
    dm = skipped_and_strict(make_config, root, "Normal-2.png", "mask")
    row = dm.table[dm.table["path"].str.endswith("Normal-2.png")]
    assert len(row) == 1 and row["mask_path"].isna().all()  # kept, without a mask
    probe = load_image_set(pd.concat([dm.table[dm.table["mask_path"].notna()].head(3), row]), dm.classes, 32)
    focus = mask_focus(torch.rand(4, 8, 8), probe.lung_masks)
    assert torch.isfinite(focus[:3]).all() and torch.isnan(focus[3])  # only that image loses its score


def test_ct_and_lateral_rows(pristine: dict[str, Path], tmp_path: Path, make_config: Any) -> None:
    root = copy(pristine, "cohen", tmp_path)
    skipped_and_strict(make_config, root, "covid-19-pneumonia-20-ct.png", "modality CT is not in data.modalities")
    dm = make(make_config, root)
    with pytest.warns(UserWarning):
        dm.prepare_table()
    assert dm.skipped["error"].str.contains("view L is not in data.views").sum() == 1


def test_label_outside_the_map(pristine: dict[str, Path], tmp_path: Path, make_config: Any) -> None:
    root = copy(pristine, "coronahack", tmp_path)
    skipped_and_strict(make_config, root, "SARS-10.1148rg", "outside the classes normal, bacteria, virus, covid")


def test_image_below_min_size(pristine: dict[str, Path], tmp_path: Path, make_config: Any) -> None:
    root = copy(pristine, "kermany", tmp_path)
    trees.write_image(root / "train" / "NORMAL" / "IM-0900-0001.jpeg", "normal", 1, (40, 48))
    skipped_and_strict(make_config, root, "IM-0900-0001.jpeg", "40x48 px is below data.min_image_size=64")


def test_duplicate_rows_dropped_and_counted(tmp_path: Path, make_config: Any) -> None:
    rows = ["path,label,patient_id"]
    for i in range(8):
        label = "a" if i % 2 else "b"
        trees.write_image(tmp_path / "img" / f"{i}.png", "normal" if i % 2 else "covid", i)
        rows.append(f"img/{i}.png,{label},p{i}")
    rows += ["img/3.png,a,p3", "img/3.png,a,p3"]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    dm = make(make_config, tmp_path / "data.csv")
    with pytest.warns(UserWarning, match=r"dropped 2 duplicate metadata row\(s\)"):
        dm.prepare_table()
    assert len(dm.table) == 8 and dm.skipped["error"].str.contains("duplicate metadata row").sum() == 2
    with pytest.raises(ValueError, match=r"3.png: duplicate metadata row.*data.strict is on"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make(make_config, tmp_path / "data.csv", strict=True).prepare_table()


def test_paths_outside_the_root_are_refused(tmp_path: Path, make_config: Any) -> None:
    outside = trees.write_image(tmp_path / "elsewhere" / "x.png", "normal", 0)
    data = tmp_path / "data"
    for i in range(6):
        trees.write_image(data / "img" / f"{i}.png", "covid" if i % 2 else "normal", i)
    lines = ["path,label"] + [f"img/{i}.png,{'covid' if i % 2 else 'normal'}" for i in range(6)]
    (data / "dotdot.csv").write_text("\n".join([*lines, "../elsewhere/x.png,normal"]) + "\n")
    with pytest.raises(ValueError, match=r"x.png: resolves to .*outside data.root .*data.allow_outside_root: true"):
        make(make_config, data / "dotdot.csv").prepare_table()
    assert len(make(make_config, data / "dotdot.csv", allow_outside_root=True).prepare_table()) == 7
    tree = tmp_path / "tree"
    shutil.copytree(data / "img", tree / "normal")
    shutil.copytree(data / "img", tree / "covid")
    os.symlink(outside, tree / "covid" / "link.png")
    with pytest.raises(ValueError, match=r"link.png: resolves to .*elsewhere/x.png, outside data.root"):
        make(make_config, tree).prepare_table()
