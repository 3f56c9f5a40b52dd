"""Dataset adapters to the sample table, file checks and label/class selection."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from cxrlab.datamodules.sources import (
    check_files,
    csv_source,
    detect_source,
    folder_source,
    load_table,
    resolve_classes,
    select_labels,
)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_resolves_relative_paths(csv_dataset: Path, tiny: Any) -> None:
    table = csv_source(csv_dataset)
    assert len(table) == len(tiny.classes) * tiny.per_class
    assert {"path", "label", "patient_id", "source", "mask_path"} <= set(table.columns)
    first = table.iloc[0]
    assert first["path"] == str((csv_dataset.parent / "images" / "covid_000.png").resolve())
    assert first["mask_path"] == str((csv_dataset.parent / "masks" / "covid_000.png").resolve())
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])
    assert table["patient_id"].nunique() == len(table) // tiny.images_per_patient
    assert set(table["source"]) == {csv_dataset.parent.name}
    assert sorted(table["label"].unique()) == list(tiny.classes)


def test_csv_absolute_paths_and_defaults(tmp_path: Path, csv_dataset: Path) -> None:
    img = (csv_dataset.parent / "images" / "normal_001.png").resolve()
    csv = write_csv(tmp_path / "abs.csv", f"path,label,patient_id\n{img},normal,\n{img},covid,p7\n")
    table = csv_source(csv, name="mine")
    assert table["path"].tolist() == [str(img)] * 2
    assert table["patient_id"].tolist() == ["normal_001", "p7"]  # empty id -> file stem
    assert set(table["source"]) == {"mine"}
    no_pid = csv_source(write_csv(tmp_path / "nopid.csv", f"path,label\n{img},normal\n"))
    assert no_pid["patient_id"].tolist() == ["normal_001"]


def test_csv_missing_columns_named(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "cols.csv", "file,diagnosis\na.png,normal\n")
    with pytest.raises(ValueError) as e:
        csv_source(csv)
    msg = str(e.value)
    assert str(csv) in msg
    assert "missing column(s) path, label" in msg and "['file', 'diagnosis']" in msg


def test_csv_empty_rows_give_line_numbers(tmp_path: Path) -> None:
    csv = write_csv(
        tmp_path / "holes.csv", "path,label\na.png,normal\nb.png,\nc.png,covid\n,covid\n"
    )
    with pytest.raises(ValueError, match=r"holes.csv: empty path or label on line\(s\) 3, 5"):
        csv_source(csv)


def test_csv_header_only_and_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="header.csv: the CSV has a header but no rows"):
        csv_source(write_csv(tmp_path / "header.csv", "path,label\n"))
    with pytest.raises(FileNotFoundError, match="absent.csv: CSV not found"):
        csv_source(tmp_path / "absent.csv")


def test_csv_split_column(tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", "path,label,split\na.png,x,train\nb.png,y,training\n")
    with pytest.raises(ValueError, match=r"bad.csv: column split has \['training'\]"):
        csv_source(bad)
    good = write_csv(tmp_path / "good.csv", "path,label,split\na.png,x,train\nb.png,y,test\n")
    assert csv_source(good)["split"].tolist() == ["train", "test"]
    partial = write_csv(tmp_path / "part.csv", "path,label,split\na.png,x,train\nb.png,y,\n")
    assert "split" not in csv_source(partial).columns  # incomplete splits are recomputed


def test_folder_source(folder_tree: Path, tiny: Any) -> None:
    table = folder_source(folder_tree)
    assert len(table) == len(tiny.classes) * tiny.per_class
    assert table["label"].value_counts().to_dict() == {c: tiny.per_class for c in tiny.classes}
    assert (table["label"] == table["path"].map(lambda p: Path(p).parent.name)).all()
    assert table["patient_id"].iloc[0] == "covid_000"
    assert set(table["source"]) == {folder_tree.name}


def test_folder_source_skips_non_images_and_hidden(
    tmp_path: Path, folder_tree: Path, tiny: Any
) -> None:
    root = tmp_path / "t"
    shutil.copytree(folder_tree / "covid", root / "covid" / "sub")  # nested images count
    shutil.copytree(folder_tree / "normal", root / ".cache")
    (root / "covid" / "notes.txt").write_text("x")
    (root / "README.md").write_text("x")
    table = folder_source(root)
    assert len(table) == tiny.per_class and set(table["label"]) == {"covid"}
    empty = tmp_path / "empty"
    (empty / "covid").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty: no images found in class sub-folders"):
        folder_source(empty)


def test_auto_detection(tmp_path: Path, folder_tree: Path, csv_dataset: Path, tiny: Any) -> None:
    phantom = tmp_path / "phantom"
    phantom.mkdir()
    shutil.copy(csv_dataset, phantom / "metadata.csv")
    shutil.copytree(csv_dataset.parent / "images", phantom / "images")
    shutil.copytree(csv_dataset.parent / "masks", phantom / "masks")
    assert detect_source(csv_dataset) == "csv"
    assert detect_source(folder_tree) == "folder"
    assert detect_source(phantom) == "phantom"
    assert len(load_table("auto", csv_dataset)) == len(tiny.classes) * tiny.per_class
    assert set(load_table("auto", folder_tree)["source"]) == {folder_tree.name}
    assert set(load_table("auto", phantom)["source"]) == {"phantom"}


def test_load_table_errors(tmp_path: Path, folder_tree: Path, csv_dataset: Path) -> None:
    with pytest.raises(ValueError, match="data.root is not set"):
        load_table("auto", None)
    with pytest.raises(FileNotFoundError, match="nowhere: data.root does not exist"):
        load_table("auto", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="data.source=csv needs data.root to be the CSV file"):
        load_table("csv", folder_tree)
    with pytest.raises(ValueError, match="data.source=folder needs a folder"):
        load_table("folder", csv_dataset)
    with pytest.raises(FileNotFoundError, match="metadata.csv not found"):
        load_table("phantom", folder_tree)
    with pytest.raises(ValueError, match="data.source='kaggle'"):
        load_table("kaggle", folder_tree)


def test_check_files_lists_missing(tmp_path: Path, csv_dataset: Path) -> None:
    table = csv_source(csv_dataset)
    check_files(table, "ok")  # all present: no error
    table.loc[3, "path"] = str(tmp_path / "gone1.png")
    table.loc[7, "mask_path"] = str(tmp_path / "gone2.png")
    with pytest.raises(FileNotFoundError) as e:
        check_files(table, "my.csv")
    msg = str(e.value)
    assert msg.startswith("my.csv: 2 referenced file(s) missing")
    assert "gone1.png" in msg and "gone2.png" in msg


def test_select_labels_merges_and_drops() -> None:
    table = pd.DataFrame({"label": ["normal", "bacteria", "virus", "covid", "covid"]})
    merged = select_labels(table, {"bacteria": "pneumonia", "virus": "pneumonia"}, None, "error")
    assert merged["label"].tolist() == ["normal", "pneumonia", "pneumonia", "covid", "covid"]
    binary = select_labels(table, {}, ["normal", "covid"], "drop")
    assert binary["label"].tolist() == ["normal", "covid", "covid"]
    kept = select_labels(table, {}, ["normal", "covid"], "error")
    assert len(kept) == 5  # 'error' keeps everything so resolve_classes can complain


def test_resolve_classes_messages() -> None:
    table = pd.DataFrame({"label": ["b", "a", "c", "a"]})
    assert resolve_classes(table, None, "w") == ["a", "b", "c"]
    assert resolve_classes(table, ["c", "a", "b"], "w") == ["c", "a", "b"]
    with pytest.raises(ValueError, match=r"w: label\(s\) \['c'\] are not in data.classes"):
        resolve_classes(table, ["a", "b"], "w")
    with pytest.raises(ValueError, match=r"w: class\(es\) \['d'\] in data.classes have no images"):
        resolve_classes(table, ["a", "b", "c", "d"], "w")
    with pytest.raises(ValueError, match="only one label"):
        resolve_classes(pd.DataFrame({"label": ["a", "a"]}), None, "w")
