"""Tests for the procedural phantom generator (datamodules/phantom.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlab.callbacks.explanations.focus import body_mask
from cxrlab.datamodules.phantom import COLUMNS, PHANTOM_CLASSES, generate_phantom, render_phantom

SIZE = 64


def _read(root: Path, rel: str) -> np.ndarray:
    """Load a PNG of a generated phantom as an array."""
    return np.asarray(Image.open(root / rel))


def _png_bytes(root: Path) -> dict[str, bytes]:
    """Every PNG under root, keyed by its relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A small phantom with half of its images marked."""
    root = tmp_path_factory.mktemp("phantom")
    return root, generate_phantom(
        root, n_per_class=10, size=SIZE, seed=3, shortcut=0.5, progress=False
    )


def _renders(label: str, n: int, size: int = SIZE, difficulty: float = 0.5):
    """n independent phantom radiographs of one class."""
    return [
        render_phantom(np.random.default_rng([11, i]), label, size, difficulty) for i in range(n)
    ]


def test_same_seed_is_byte_identical_and_independent_of_workers(tmp_path: Path) -> None:
    kw = dict(n_per_class=4, size=SIZE, shortcut=0.5, progress=False)
    a = generate_phantom(tmp_path / "a", seed=5, workers=1, **kw)
    b = generate_phantom(tmp_path / "b", seed=5, workers=2, **kw)
    c = generate_phantom(tmp_path / "c", seed=6, workers=1, **kw)
    pngs_a, pngs_b, pngs_c = (_png_bytes(tmp_path / k) for k in "abc")
    assert len(pngs_a) == 3 * 16
    assert pngs_a == pngs_b
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, pd.read_csv(tmp_path / "a" / "metadata.csv"))
    images = [k for k in pngs_a if k.startswith("images")]
    assert sum(pngs_a[k] != pngs_c[k] for k in images) == len(images)
    assert not a.equals(c)


def test_layout_columns_and_readme(phantom: tuple[Path, pd.DataFrame]) -> None:
    root, table = phantom
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 40
    assert table.label.value_counts().to_dict() == {c: 10 for c in PHANTOM_CLASSES}
    for row in table.itertuples():
        for rel in (row.path, row.mask_path, row.lesion_path):
            assert not Path(rel).is_absolute() and rel.split("/")[1] == row.label
            img = Image.open(root / rel)
            assert img.mode == "L" and img.size == (SIZE, SIZE)
    assert "seed=3" in (root / "README.txt").read_text()


def test_masks_are_binary_and_lesions_lie_inside_lungs(phantom: tuple[Path, pd.DataFrame]) -> None:
    root, table = phantom
    for row in table.itertuples():
        lung, lesion = _read(root, row.mask_path), _read(root, row.lesion_path)
        assert set(np.unique(lung)) <= {0, 255} and set(np.unique(lesion)) <= {0, 255}
        assert lung.mean() / 255 > 0.1  # lungs are a sizeable part of a chest film
        # Exact subset: both masks are nearest-neighbour samples of one canonical label map.
        assert not np.any((lesion > 0) & (lung == 0))
        assert (lesion.max() == 0) == (row.label == "normal")


def test_patients_hold_one_to_three_images_of_one_anatomy(
    phantom: tuple[Path, pd.DataFrame],
) -> None:
    root, table = phantom
    sizes = table.groupby("patient_id").size()
    assert sizes.between(1, 3).all() and (sizes > 1).any()
    assert (table.groupby("patient_id").label.nunique() == 1).all()
    lungs = {r.path: _read(root, r.mask_path) > 0 for r in table.itertuples()}

    def iou(a: str, b: str) -> float:
        return float((lungs[a] & lungs[b]).sum() / (lungs[a] | lungs[b]).sum())

    same = [
        iou(g.path.iloc[0], g.path.iloc[1]) for _, g in table.groupby("patient_id") if len(g) > 1
    ]
    firsts = table.groupby("patient_id").path.first().tolist()
    other = [iou(a, b) for a, b in zip(firsts, firsts[1:], strict=False)]
    assert np.mean(same) > 0.85
    assert np.mean(same) > np.mean(other) + 0.05


def test_shortcut_share_matches_probability(
    phantom: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    _, table = phantom
    assert 0.3 <= table.shortcut.mean() <= 0.7
    kw = dict(n_per_class=3, size=SIZE, seed=3, progress=False)
    assert generate_phantom(tmp_path / "none", shortcut=0.0, **kw).shortcut.sum() == 0
    assert generate_phantom(tmp_path / "all", shortcut=1.0, **kw).shortcut.sum() == 12


def test_shortcut_only_adds_markers(phantom: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, table = phantom
    clean = generate_phantom(tmp_path, n_per_class=10, size=SIZE, seed=3, progress=False)
    pd.testing.assert_series_equal(table.path, clean.path)
    for row in table.itertuples():
        diff = _read(root, row.path) != _read(tmp_path, row.path)
        assert diff.any() == bool(row.shortcut)


def test_markers_sit_in_a_class_corner_outside_the_lungs() -> None:
    corners = set()
    for k, label in enumerate(PHANTOM_CLASSES):
        for seed in range(3):
            marked, lung, _, _ = render_phantom(np.random.default_rng(seed), label, SIZE, 1.0, k)
            plain, _, _, _ = render_phantom(np.random.default_rng(seed), label, SIZE, 1.0)
            rows, cols = np.nonzero(marked != plain)
            assert rows.size > 0 and np.all(marked[rows, cols] == 255)
            assert not lung[rows, cols].any()
            corner = (rows.mean() > SIZE / 2, cols.mean() > SIZE / 2)
            assert np.ptp(rows) < SIZE / 4 and np.ptp(cols) < SIZE / 4
            corners.add((k, corner))
    assert len({c for _, c in corners}) == 4 and len(corners) == 4


@pytest.mark.parametrize("difficulty", [0.0, 0.5, 1.0])
def test_body_mask_from_the_image_matches_the_body_outline(difficulty: float) -> None:
    # The mask-free outside-body focus rests on this: threshold + morphology finds the body,
    # ignoring the burnt-in marker, without any model.
    for k, label in enumerate(PHANTOM_CLASSES):
        for seed in range(2):
            view = render_phantom(np.random.default_rng([seed, k]), label, 128, difficulty, k)
            found = body_mask(torch.from_numpy(view.image).float()[None] / 255)[0].numpy()
            iou = (found & view.body).sum() / (found | view.body).sum()
            assert iou >= 0.9, (label, seed, iou)
            assert view.lung[view.body].sum() == view.lung.sum()  # lungs lie inside the body


def test_diseased_lungs_are_brighter_than_normal() -> None:
    mean = {
        c: np.mean([img[lung].mean() for img, lung, *_ in _renders(c, 24)]) for c in PHANTOM_CLASSES
    }
    for label in ("bacteria", "virus", "covid"):
        assert mean[label] > mean["normal"] + 3, mean


def _halves(lung: np.ndarray) -> tuple[float, float]:
    """Middle row and column of the lung mask's bounding box."""
    rows, cols = np.nonzero(lung)
    return (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2


def test_covid_is_peripheral_and_lower_zone() -> None:
    for _, lung, lesion, _ in _renders("covid", 12):
        mid_r, mid_c = _halves(lung)
        rows, cols = np.nonzero(lesion)
        lung_dist = np.abs(np.nonzero(lung)[1] - mid_c)
        assert np.mean(rows > mid_r) > 0.7
        assert np.mean(np.abs(cols - mid_c) > np.median(lung_dist)) > 0.75
        assert min(np.mean(cols < mid_c), np.mean(cols > mid_c)) > 0.15  # bilateral


def test_bacteria_is_mostly_in_one_lung() -> None:
    shares = []
    for _, lung, lesion, _ in _renders("bacteria", 12):
        _, mid_c = _halves(lung)
        left = np.mean(np.nonzero(lesion)[1] < mid_c)
        shares.append(max(left, 1 - left))
    assert min(shares) > 0.8 and np.median(shares) > 0.95


def test_virus_covers_both_lungs() -> None:
    for _, lung, lesion, _ in _renders("virus", 12):
        _, mid_c = _halves(lung)
        c = int(mid_c)
        for side in (np.s_[:, :c], np.s_[:, c:]):
            assert lesion[side].sum() > 0.1 * lung[side].sum()


def test_difficulty_fades_findings() -> None:
    def contrast(d: float) -> float:
        sick = [
            img[lesion].mean() - img[lung & ~lesion].mean()
            for img, lung, lesion, _ in _renders("bacteria", 10, difficulty=d)
        ]
        return float(np.mean(sick))

    assert contrast(0.0) > contrast(1.0) + 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_per_class": 0}, "n_per_class must be >= 1"),
        ({"size": 16}, "size must be >= 32"),
        ({"classes": ("normal", "flu")}, "unknown names"),
        ({"classes": ("covid", "covid")}, "twice"),
        ({"classes": ()}, "at least one"),
        ({"shortcut": 1.5}, r"shortcut must be in \[0, 1\]"),
        ({"difficulty": -0.1}, r"difficulty must be in \[0, 1\]"),
        ({"workers": 0}, "workers must be >= 1"),
        ({"seed": -1}, "seed must be a non-negative"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_phantom(tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_render_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="label must be one of"):
        render_phantom(rng, "flu", SIZE)
    with pytest.raises(ValueError, match="marker must be None or a class index"):
        render_phantom(rng, "covid", SIZE, marker=4)


def test_refuses_foreign_folder_and_overwrites_previous_phantom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        generate_phantom(tmp_path / "notes.txt", n_per_class=1, size=SIZE, progress=False)
    with pytest.raises(ValueError, match="not empty and holds no phantom metadata.csv"):
        generate_phantom(tmp_path, n_per_class=1, size=SIZE, progress=False)
    out = tmp_path / "ph"
    generate_phantom(out, n_per_class=3, size=SIZE, progress=False)
    table = generate_phantom(out, n_per_class=2, size=SIZE, classes=("covid",), progress=False)
    assert len(table) == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == ["covid"]
    assert len(list(out.rglob("*.png"))) == 6


def test_cli_writes_a_trainable_phantom(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cxrlab.datamodules.sources import load_table
    from cxrlab.experiments.cli.main import main

    out = tmp_path / "ph"
    args = ["data", "phantom", str(out), "--n_per_class", "3", "--size", "64", "--classes", "normal,covid", "--quiet"]
    assert main(args) == 0
    assert "wrote 6 images of 2 classes" in capsys.readouterr().out
    table = load_table("auto", out)  # auto-detected as the phantom source, masks included
    assert sorted(table["label"].unique()) == ["covid", "normal"]
    assert table["source"].eq("phantom").all() and table["mask_path"].notna().all()
    assert main(["data", "phantom", str(tmp_path / "bad"), "--classes", "normal,flu", "--quiet"]) == 2
    assert "flu" in capsys.readouterr().err
