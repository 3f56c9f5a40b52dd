"""Every public dataset layout, as downloaded, read into the sample table (fixture trees with the
real names and quirks from tests/dataset_trees.py)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import dataset_trees as trees
import pandas as pd
import pytest

from cxrlab.datamodules.probe import load_image_set
from cxrlab.datamodules.sources import SourceOptions, detect_source, read_source, source_names
from cxrlab.datamodules.splits import split_leaks


def read(root: Path, source: str = "auto", **options: Any) -> Any:
    """read_source with warnings collected (skips warn) instead of printed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_source(source, root, SourceOptions(**options))


def names(table: pd.DataFrame) -> list[str]:
    return sorted(Path(p).name for p in table["path"])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="module")
def kermany(base: Path) -> Path:
    return trees.write_kermany(base / "kermany")


@pytest.fixture(scope="module")
def coronahack(base: Path) -> Path:
    return trees.write_coronahack(base / "coronahack")


@pytest.fixture(scope="module")
def radiography(base: Path) -> Path:
    return trees.write_covid_radiography(base / "radiography")


@pytest.fixture(scope="module")
def cohen(base: Path) -> Path:
    return trees.write_cohen(base / "cohen")


@pytest.fixture(scope="module")
def covidx(base: Path) -> Path:
    return trees.write_covidx(base / "covidx")


def test_every_source_is_registered_once() -> None:
    assert source_names() == (
        "csv", "phantom", "folder", "kermany", "coronahack", "covid_radiography", "cohen", "covidx", "nih", "chexpert",
        "mimic_cxr_jpg", "padchest", "rsna_pneumonia", "combine"
    )


def test_kermany(kermany: Path) -> None:
    assert detect_source(kermany) == "kermany"
    assert detect_source(kermany.parent) == "kermany"  # the folder the zip was unpacked into
    t = read(kermany).table
    expected = {name: (split, trees.kermany_label(folder, name)) for split, folder, name in trees.KERMANY_FILES}
    assert names(t) == sorted(expected)  # no __MACOSX, ._*, .DS_Store or chest_xray/chest_xray copies
    assert not t["path"].str.contains("__MACOSX|/chest_xray/chest_xray/|/\\._").any()
    for row in t.itertuples():
        assert (row.official_split, row.label) == expected[Path(row.path).name]
    pid = dict(zip(t["path"].map(lambda p: Path(p).name), t["patient_id"], strict=True))
    assert pid["person447_virus_921_1.jpeg"] == pid["person447_virus_923.jpeg"] == "person447"
    assert pid["IM-0001-0001.jpeg"] == pid["IM-0001-0002.jpeg"] == "IM-0001"
    assert pid["NORMAL2-IM-0012-0001.jpeg"] == "NORMAL2-IM-0012"
    leaks = split_leaks(t, "official_split")
    assert dict(zip(leaks["patient_id"], leaks["splits"], strict=True)) == {
        "IM-0003": "test,train", "person447": "test,train"
    }


def test_coronahack(coronahack: Path, tmp_path: Path) -> None:
    assert detect_source(coronahack) == "coronahack"
    loaded = read(coronahack)
    expected = {r[0]: (r[2].lower(), r[5]) for r in trees.CORONAHACK_ROWS if r[5]}
    t = loaded.table
    assert names(t) == sorted(expected)
    for row in t.itertuples():
        assert (row.official_split, row.label) == expected[Path(row.path).name]
    assert t["label"].value_counts().to_dict() == {"normal": 6, "bacteria": 6, "virus": 6, "covid": 6}
    assert len(loaded.skipped) == 1 and "Stress-Smoking" in loaded.skipped["error"].iloc[0]
    # A single level of Coronahack-Chest-XRay-Dataset/ is accepted too.
    flat = shutil.copytree(coronahack, tmp_path / "flat")
    inner = flat / "Coronahack-Chest-XRay-Dataset"
    for split in ("train", "test"):
        shutil.move(inner / "Coronahack-Chest-XRay-Dataset" / split, inner / split)
    assert len(read(flat).table) == len(t)


def test_covid_radiography(radiography: Path) -> None:
    assert detect_source(radiography) == detect_source(radiography.parent) == "covid_radiography"
    t = read(radiography).table
    assert t["label"].value_counts().to_dict() == {"covid": 5, "lung_opacity": 5, "normal": 5, "virus": 5}
    assert "Viral Pneumonia-1.png" in names(t) and "Lung_Opacity-3.png" in names(t)
    assert t["mask_path"].map(lambda p: Path(p).is_file()).all()
    normal1 = t[t["path"].str.endswith("Normal-1.png")].iloc[0]
    assert normal1["origin"] == "https://example.org/normal"  # NORMAL-1 in the xlsx, case-insensitively
    assert t["patient_id"].nunique() == len(t)  # no patient ids in this set: one image, one patient


def test_covid_radiography_masks_fit_their_images(radiography: Path) -> None:
    t = read(radiography).table.head(2)  # 80 px images, 64 px masks
    masks = load_image_set(t, ["covid"], size=40).lung_masks
    assert masks is not None and masks.shape == (2, 40, 40)
    expected = trees.write_mask(radiography.parent / "m.png", 40)  # the same mask drawn at 40 px
    from cxrlab.datamodules.images import read_mask

    agree = (masks[0].numpy() == read_mask(expected)).mean()
    assert agree > 0.95


def test_covid_radiography_old_release(base: Path) -> None:
    root = trees.write_covid_radiography_old(base / "old")
    assert detect_source(root) == "covid_radiography"
    t = read(root).table
    assert "COVID-19 (125).png" in names(t)
    assert t["label"].value_counts().to_dict() == {"covid": 3, "normal": 3, "virus": 3}
    assert (t["origin"] == "https://example.org/old").all()  # incl. the 'matadata' spelling
    assert "mask_path" not in t.columns or t["mask_path"].isna().all()


def test_cohen(cohen: Path) -> None:
    assert detect_source(cohen) == "cohen"
    loaded = read(cohen)
    t = loaded.table
    kept = {r[4]: r[5] for r in trees.COHEN_ROWS if r[5]}
    assert dict(zip(t["path"].map(lambda p: Path(p).name), t["label"], strict=True)) == kept
    assert (t.groupby("patient_id").size()["2"]) == 2
    reasons = " ".join(loaded.skipped["error"])
    assert "view L is not in data.views" in reasons and "modality CT" in reasons
    assert "finding 'todo' is outside the label map" in reasons
    # The config keys open the filters: lateral views kept when data.views lists L.
    with_l = read(cohen, views=("PA", "AP", "AP Supine", "L")).table
    assert "covid-19-pneumonia-7-L.jpg" in names(with_l)


def test_cohen_older_header(base: Path) -> None:
    root = trees.write_cohen_old(base / "cohen_old")
    loaded = read(root)
    kept = {r[4]: r[5] for r in trees.COHEN_OLD_ROWS if r[5]}
    assert dict(zip(loaded.table["path"].map(lambda p: Path(p).name), loaded.table["label"], strict=True)) == kept
    assert len(loaded.skipped) == 1 and "'Unknown'" in loaded.skipped["error"].iloc[0]


def test_covidx(covidx: Path) -> None:
    assert detect_source(covidx) == "covidx"
    t = read(covidx).table
    expected = {r[2]: (r[0], r[1], r[5]) for r in trees.COVIDX_LINES}
    assert names(t) == sorted(expected)
    for row in t.itertuples():
        assert (row.official_split, row.patient_id, row.label) == expected[Path(row.path).name]
    assert (t["patient_id"] == "COVID-19 (12)").sum() == 2


def test_combine(base: Path) -> None:
    root = trees.write_combined(base / "combined")
    assert detect_source(root) == "combine"
    t = read(root, "combine", combine_labels={"cohen": ("covid",)}).table
    counts = t.groupby(["source", "label"]).size().to_dict()
    assert counts == {("cohen", "covid"): 6, ("coronahack", "bacteria"): 6, ("coronahack", "covid"): 6,
                      ("coronahack", "normal"): 6, ("coronahack", "virus"): 6}
    named = read(root, "combine", combine={"coronahack": "archive", "cohen": "covid-chestxray-dataset"}).table
    assert set(named["source"]) == {"coronahack", "cohen"} and len(named) == 24 + 12
    with pytest.raises(ValueError, match="data.source='kaggle' is not one of auto, csv"):
        read(root, "combine", combine={"kaggle": "archive"})


def data_module(make_config: Any, root: Path, **data: Any) -> Any:
    """A CXRDataModule on a fixture tree (dotted data overrides as keyword arguments)."""
    from cxrlab.datamodules.datamodule import CXRDataModule

    cfg = make_config({"data.root": str(root), "data.num_workers": 0, "data.image_size": 32,
                       **{f"data.{k}": v for k, v in data.items()}})
    return CXRDataModule(cfg.data, seed=0)


@pytest.mark.parametrize("source", ["kermany", "coronahack", "covid_radiography", "cohen", "covidx", "combine"])
def test_patient_grouped_splits_never_leak(source: str, base: Path, make_config: Any, request: Any) -> None:
    root = {
        "kermany": lambda: request.getfixturevalue("kermany"),
        "coronahack": lambda: request.getfixturevalue("coronahack"),
        "covid_radiography": lambda: request.getfixturevalue("radiography"),
        "cohen": lambda: request.getfixturevalue("cohen"),
        "covidx": lambda: request.getfixturevalue("covidx"),
        "combine": lambda: trees.write_combined(base / f"leak_{source}"),
    }[source]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = data_module(make_config, root, source=source, split=[0.5, 0.5]).prepare_table()
    assert table["split"].isin(["train", "val"]).all()
    assert (table.groupby("patient_id")["split"].nunique() == 1).all()


def test_official_split_with_leak_report(kermany: Path, make_config: Any) -> None:
    dm = data_module(make_config, kermany, official_split=True)
    with pytest.warns(UserWarning, match=r"official split puts 2 patient\(s\) in more than one split.*IM-0003 in test,train"):
        table = dm.prepare_table()
    assert (table["split"] == table["official_split"]).all()


def test_official_split_carves_val_from_train(coronahack: Path, cohen: Path, make_config: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = data_module(make_config, coronahack, official_split=True, split=[0.5, 0.5]).prepare_table()
    assert (table.loc[table["official_split"] == "test", "split"] == "test").all()
    carved = table[table["official_split"] == "train"]
    assert set(carved["split"]) == {"train", "val"}
    assert (carved.groupby("patient_id")["split"].nunique() == 1).all()
    with pytest.raises(ValueError, match="data.official_split is on but this source has no official split"):
        data_module(make_config, cohen, official_split=True).prepare_table()


def test_label_map_and_classes_on_top(coronahack: Path, make_config: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = data_module(make_config, coronahack, split=[0.5, 0.5], classes=["covid", "non_covid"],
                         label_map={"normal": "non_covid", "bacteria": "non_covid", "virus": "non_covid"})
        dm.prepare_table()
        three = data_module(make_config, coronahack, split=[0.5, 0.5], classes=["covid", "normal", "pneumonia"],
                            label_map={"bacteria": "pneumonia", "virus": "pneumonia"})
        three.prepare_table()
    assert dm.classes == ["covid", "non_covid"] and dm.table["label"].value_counts()["non_covid"] == 18
    assert three.table["label"].value_counts().to_dict() == {"pneumonia": 12, "covid": 6, "normal": 6}


def test_config_checks_source_names_from_the_registry() -> None:
    from cxrlab.config import ConfigError, load_config
    from cxrlab.experiments.training.checks import check_config

    for name in source_names():
        assert check_config(load_config(overrides={"data.source": name})).data.source == name
    with pytest.raises(ConfigError, match=r"config \(with overrides\): data.source='kermani' is not one of auto, csv, .*did you mean 'kermany'"):
        check_config(load_config(overrides={"data.source": "kermani"}), "config (with overrides)")
    with pytest.raises(ConfigError, match="data.official_split and data.folds=4 exclude each other"):
        load_config(overrides={"data.official_split": True, "data.folds": 4})


def test_ambiguous_auto_detection_names_the_candidates(kermany: Path, tmp_path: Path) -> None:
    both = shutil.copytree(kermany, tmp_path / "both")
    (both / "train.txt").write_text("1 a.png negative\n")
    (both / "test.txt").write_text("2 b.png negative\n")
    with pytest.raises(ValueError, match=r"data.source=auto is ambiguous \(looks like kermany, covidx\)"):
        detect_source(both)
