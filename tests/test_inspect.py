"""`cxrlab data inspect`: counts, properties, duplicates, unreadable files, leaks, confounders."""

from __future__ import annotations

import shutil
from pathlib import Path

import dataset_trees as trees
import pandas as pd
import pytest

from cxrlab.config import DataConfig, load_config
from cxrlab.datamodules.inspection import inspect_dataset
from cxrlab.experiments.cli.main import main


def data_config(root: Path, **data: object) -> DataConfig:
    return load_config(overrides={"data.root": str(root), **{f"data.{k}": v for k, v in data.items()}}).data


def test_inspect_kermany_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = trees.write_kermany(tmp_path / "k")
    shutil.copy(root / "train" / "NORMAL" / "IM-0001-0001.jpeg", root / "train" / "NORMAL" / "IM-0777-0001.jpeg")
    (root / "train" / "NORMAL" / "IM-0778-0001.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    trees.write_image(root / "test" / "NORMAL" / "IM-0779-0001.jpeg", "normal", 1, (48, 60))
    out = tmp_path / "out"
    assert main(["data", "inspect", "--data.source", "kermany", "--data.root", str(root), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "source kermany: 35 images" in text and "1 unreadable" in text
    assert "images below data.min_image_size=64 px, which training skips (1)" in text and "48x60" in text
    assert "exact duplicate files: 1 group(s), 1 redundant copies" in text
    assert "patients across the official split: 2 (5 images)" in text and "person447: test,train" in text
    by_split = pd.read_csv(out / "class_by_split.csv", index_col=0)
    assert by_split.loc["normal", "train"] == 11 and by_split.loc["normal", "test"] == 4
    images = pd.read_csv(out / "images.csv")
    assert {"width", "height", "file_kb", "bits", "mode", "sha1", "official_split"} <= set(images.columns)
    assert "IM-0778-0001.jpeg" in pd.read_csv(out / "unreadable.csv")["path"].iloc[0]
    assert (out / "class_balance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(pd.read_csv(out / "leaks.csv")["patient_id"]) == {"IM-0003", "person447"}


def test_confounder_warning_names_the_numbers(tmp_path: Path) -> None:
    root = tmp_path / "sized"
    for i in range(6):  # normal films are large, pneumonia films small: resolution predicts the label
        trees.write_image(root / "normal" / f"n{i}.png", "normal", i, (160 + 8 * i, 150 + 8 * i))
        trees.write_image(root / "pneumonia" / f"p{i}.png", "pneumonia", 10 + i, (64 + 4 * i, 64 + 4 * i))
    ins = inspect_dataset(data_config(root, source="folder"), progress=False)
    text = "\n".join(ins.confounders)
    assert "width (px) separates normal (160-200) from pneumonia (64-84), AUC 1.00" in text
    assert "height (px) separates normal (150-190)" in text
    same = tmp_path / "same"
    for i in range(6):
        trees.write_image(same / "normal" / f"n{i}.png", "normal", i, (64 + 4 * i, 64))
        trees.write_image(same / "pneumonia" / f"p{i}.png", "pneumonia", 10 + i, (64 + 4 * i, 64))
    assert not [w for w in inspect_dataset(data_config(same, source="folder"), progress=False).confounders
                if "width" in w or "height" in w]


def test_inspect_combined_counts_per_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = trees.write_combined(tmp_path / "c")
    assert main(["data", "inspect", "--config", "lucas2021_vgg19_4class", "--data.root", str(root), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "class by source" in text and "cohen" in text and "coronahack" in text
    assert "rows skipped" in text and "Stress-Smoking" in text


def test_inspect_help_and_sources(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["data", "inspect", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--data.source" in text and "--out DIR" in text and "--data.strict" in text
    assert "class_balance.png" in text and "separates two classes" in text
    assert main(["data", "sources"]) == 0
    listing = capsys.readouterr().out
    for name in ("kermany", "coronahack", "covid_radiography", "cohen", "covidx", "combine", "phantom"):
        assert name in listing
