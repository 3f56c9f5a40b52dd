"""CXRDataModule end to end on tiny on-disk datasets."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from samples import write_bomb_png

from cxrlab.datamodules.datamodule import CXRDataModule
from cxrlab.datamodules.images import read_image
from cxrlab.datamodules.transforms import crop_margin, eval_transform


@pytest.fixture
def make_dm(make_config: Callable) -> Callable[..., CXRDataModule]:
    """A CXRDataModule on `root` with ci_tiny-like loading and dotted data overrides."""

    def make(root: Path, size: int = 32, **data: Any) -> CXRDataModule:
        base = {
            "data.root": str(root),
            "data.split": [0.6, 0.2, 0.2],
            "data.batch_size": 8,
            "data.num_workers": 0,
        }
        cfg = make_config(base | {"data.image_size": size} | {f"data.{k}": v for k, v in data.items()})
        return CXRDataModule(cfg.data, seed=0)

    return make


def test_splits_and_loaders(make_dm: Callable, folder_tree: Path, tiny: Any) -> None:
    dm = make_dm(folder_tree)
    dm.setup("fit")
    table = dm.table
    assert dm.classes == sorted(tiny.classes)
    assert len(table) == len(tiny.classes) * tiny.per_class and dm.skipped.empty
    counts = pd.crosstab(table["label"], table["split"])
    # 16 single-image patients per class at 0.6/0.2/0.2 -> 10/3/3 by the deficit rule.
    assert counts.loc[:, ["train", "val", "test"]].values.tolist() == [[10, 3, 3]] * 3
    assert len(dm.datasets["train"]) == 30 and len(dm.datasets["val"]) == 9
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.8
    assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2}
    val = list(dm.val_dataloader())
    assert sum(len(b[1]) for b in val) == 9
    assert sorted(torch.cat([b[1] for b in val]).tolist()) == [0] * 3 + [1] * 3 + [2] * 3


def test_resize_to_image_size(make_dm: Callable, folder_tree: Path) -> None:
    dm = make_dm(folder_tree, size=48)
    dm.setup()
    x, _ = dm.datasets["test"][0]
    assert x.shape == (1, 48, 48)


def test_targets_follow_labels(make_dm: Callable, csv_dataset: Path) -> None:
    dm = make_dm(csv_dataset, classes=["normal", "covid", "pneumonia"])
    dm.setup()
    ds = dm.datasets["train"]
    labels = dm.split_table("train")["label"].tolist()
    assert [dm.classes[t] for t in ds.targets] == labels
    # Patients never straddle splits, with two images per patient in the CSV.
    assert (dm.table.groupby("patient_id")["split"].nunique() == 1).all()


def test_corrupt_image_skipped_and_counted(
    make_dm: Callable, folder_tree: Path, tmp_path: Path, tiny: Any
) -> None:
    root = shutil.copytree(folder_tree, tmp_path / "tree")
    bad = root / "normal" / "normal_004.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dm = make_dm(root)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable or too small image\(s\), e.g. .*normal_004.png"):
        dm.setup()
    assert len(dm.skipped) == 1
    assert Path(dm.skipped["path"].iloc[0]).name == "normal_004.png"
    assert len(dm.table) == len(tiny.classes) * tiny.per_class - 1
    assert str(bad.resolve()) not in set(dm.table["path"])


def test_verify_off_does_not_decode(make_dm: Callable, folder_tree: Path, tmp_path: Path) -> None:
    root = shutil.copytree(folder_tree, tmp_path / "tree")
    (root / "covid" / "covid_000.png").write_bytes(b"junk")
    dm = make_dm(root, verify_images=False)
    dm.prepare_table()
    assert dm.skipped.empty and len(dm.table) == 48


def test_augmentation_only_for_train(make_dm: Callable, folder_tree: Path) -> None:
    dm = make_dm(folder_tree, augment={"rotate": 30, "shift": 0.2, "zoom": 0.1})
    dm.setup()
    torch.manual_seed(0)
    for split in ("train", "val"):
        ds = dm.datasets[split]
        plain = eval_transform(32)(torch.from_numpy(read_image(ds.paths[0]))[None])
        a, b = ds[0][0], ds[0][0]
        if split == "train":
            assert not torch.equal(a, b)
            assert (a - plain).abs().mean() > 0.01
        else:
            assert torch.equal(a, b) and torch.equal(a, plain)


def test_no_augmentation_train_equals_eval(make_dm: Callable, folder_tree: Path) -> None:
    dm = make_dm(folder_tree)
    dm.setup()
    ds = dm.datasets["train"]
    plain = eval_transform(32)(torch.from_numpy(read_image(ds.paths[3]))[None])
    assert torch.equal(ds[3][0], plain)


def test_crop_margin_function() -> None:
    x = torch.zeros(1, 20, 40)
    x[..., :2, :] = x[..., -2:, :] = x[..., :, :4] = x[..., :, -4:] = 1.0  # a burnt-in frame
    out = crop_margin(x, 0.1)
    assert out.shape == (1, 16, 32) and out.max() == 0.0
    assert crop_margin(x, 0.0) is x


def test_crop_margin_removes_border_content(make_dm: Callable, folder_tree: Path) -> None:
    # 'covid' images carry their bright square at rows/cols 2..9; a 35 % margin (11 px of 32)
    # cuts it away entirely, leaving only the 0.1..0.35 noise.
    dm = make_dm(folder_tree, crop_margin=0.35)
    dm.setup()
    ds = dm.datasets["val"]
    covid = [ds[i][0] for i, t in enumerate(ds.targets) if t == dm.classes.index("covid")]
    assert len(covid) == 3
    assert all(x.shape == (1, 32, 32) and x.max() < 0.4 for x in covid)
    uncropped = make_dm(folder_tree)
    uncropped.setup()
    first = uncropped.datasets["val"][int(np.flatnonzero(ds.targets == 0)[0])][0]
    assert first.max() > 0.8


@pytest.mark.parametrize("balance", ["oversample", "augment_minority"])
def test_balanced_train_counts(
    make_dm: Callable, folder_tree: Path, tmp_path: Path, balance: str
) -> None:
    root = shutil.copytree(folder_tree, tmp_path / "tree")
    for label, keep in (("covid", 8), ("normal", 12)):
        for i in range(keep, 16):
            (root / label / f"{label}_{i:03d}.png").unlink()
    dm = make_dm(root, balance=balance)
    dm.setup()
    n = pd.crosstab(dm.table["label"], dm.table["split"])["train"]
    assert n.to_dict() == {"covid": 5, "normal": 7, "pneumonia": 10}
    train = dm.datasets["train"]
    targets = np.array([train[i][1] for i in range(len(train))])
    # oversample: every class up to the largest; augment_minority: each minority image twice.
    expected = [10, 10, 10] if balance == "oversample" else [10, 14, 10]
    assert np.bincount(targets).tolist() == expected


def test_downsample_and_class_weights(make_dm: Callable, folder_tree: Path, tmp_path: Path) -> None:
    root = shutil.copytree(folder_tree, tmp_path / "tree")
    for i in range(10, 16):
        (root / "pneumonia" / f"pneumonia_{i:03d}.png").unlink()
    weighted = make_dm(root, class_weights=True)
    weighted.prepare_table()
    n = weighted.split_table("train")["label"].value_counts()
    total = n.sum()
    assert weighted.class_weights == pytest.approx([total / (3 * n[c]) for c in weighted.classes])
    down = make_dm(root, balance="downsample")
    down.prepare_table()
    assert down.table["label"].value_counts().to_dict() == {c: 10 for c in down.classes}
    assert down.class_weights is None


def test_kfold_splits(make_dm: Callable, folder_tree: Path) -> None:
    dm = make_dm(folder_tree, folds=4, fold=1)
    dm.setup()
    assert set(dm.table["split"]) == {"train", "val"}
    assert (dm.table["split"] == "val").sum() == 12  # 48 single-image patients / 4 folds
    assert len(dm.datasets["test"]) == 0


def test_split_column_from_csv_is_kept(
    make_dm: Callable, csv_dataset: Path, tmp_path: Path
) -> None:
    table = pd.read_csv(csv_dataset)
    table["path"] = [str(csv_dataset.parent / p) for p in table["path"]]
    table["mask_path"] = [str(csv_dataset.parent / p) for p in table["mask_path"]]
    table["split"] = np.where(np.arange(len(table)) % 4 == 0, "val", "train")
    table.to_csv(tmp_path / "fixed.csv", index=False)
    dm = make_dm(tmp_path / "fixed.csv", allow_outside_root=True)  # absolute paths elsewhere
    dm.prepare_table()
    assert dm.table["split"].tolist() == table["split"].tolist()


def test_split_missing_a_class_errors(make_dm: Callable, folder_tree: Path, tmp_path: Path) -> None:
    root = shutil.copytree(folder_tree, tmp_path / "tree")
    for i in range(1, 16):
        (root / "covid" / f"covid_{i:03d}.png").unlink()  # one covid patient cannot fill 3 splits
    with pytest.raises(ValueError, match=r"split has no images of \['covid'\]"):
        make_dm(root).prepare_table()


@pytest.mark.parametrize("cached", [False, True])
def test_decompression_bomb_skipped_unread(
    make_dm: Callable, folder_tree: Path, tmp_path: Path, tiny: Any, cached: bool
) -> None:
    root = shutil.copytree(folder_tree, tmp_path / "tree")
    write_bomb_png(root / "covid" / "bomb.png")  # 169 MP in 20 KB, among the 4 verification threads
    dm = make_dm(root, cache=str(tmp_path / "cache") if cached else None)
    with pytest.warns(UserWarning, match=r"skipped 1 .*bomb.png: 169000000 pixels exceeds data.max_pixels"):
        dm.setup()
    assert [Path(p).name for p in dm.skipped["path"]] == ["bomb.png"]
    assert len(dm.table) == len(tiny.classes) * tiny.per_class
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 32, 32)
