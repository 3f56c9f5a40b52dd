"""Shared fixtures: tiny on-disk CXR-like datasets and an isolated MLflow working directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from servers import mlflow_server, postgres  # noqa: F401 (fixtures: throwaway PostgreSQL / MLflow server)

from cxrlab.config import Config, load_config
from cxrlab.datamodules.images import read_image
from cxrlab.datamodules.transforms import eval_transform

# Test tensors are tiny, so a second intra-op thread buys nothing; on a busy 2-core runner
# OpenMP spin-waiting made small convolutions 10-50x slower with two threads than with one.
torch.set_num_threads(1)

# At its peak the fast suite holds ~6 GB of real checkpoints under the pytest basetemp.
NEEDED_DISK_GB = 8


def pytest_sessionstart(session: pytest.Session) -> None:
    """One line up front when the disk is too full for the suite, instead of ENOSPC mid-run."""
    free = shutil.disk_usage(tempfile.gettempdir()).free / 1e9
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if free < NEEDED_DISK_GB and reporter is not None:
        reporter.write_line(
            f"WARNING: {free:.1f} GB free under {tempfile.gettempdir()}; the suite needs about {NEEDED_DISK_GB} GB "
            "for checkpoints. Free space (old pytest-of-* folders) or set TMPDIR to a roomier disk.",
            yellow=True,
        )


# Learning tests train with this seed; run them with CXRLAB_LEARNING_SEED=1..4 as well to check
# that their margins hold across seeds (and so across CPUs whose float kernels differ).
LEARNING_SEED = int(os.environ.get("CXRLAB_LEARNING_SEED", "0"))

CLASSES = ("covid", "normal", "pneumonia")
# Each class owns a corner and a square side, so a CNN can tell them apart by position or by
# bright-pixel mass alone (a GAP head only sees the mass): learnable in a few epochs.
SQUARES = {"covid": (2, 2, 8), "normal": (12, 12, 6), "pneumonia": (20, 20, 12)}
SIZE = 32
PER_CLASS = 16
IMAGES_PER_PATIENT = 2


def class_image(label: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A uint8 [size, size] image: dim noise plus the class's bright square."""
    img = rng.uniform(0.1, 0.35, (size, size))
    scale = size / SIZE
    r, c, side = (int(v * scale) for v in SQUARES[label])
    img[r : r + side, c : c + side] = rng.uniform(0.85, 1.0)
    return (img * 255).round().astype(np.uint8)


def lung_mask(size: int = SIZE) -> np.ndarray:
    """Two ellipses where the lungs of a frontal CXR would be, as a 0/255 uint8 image."""
    yy, xx = np.mgrid[:size, :size] / size
    left = ((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 <= 1
    right = ((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 <= 1
    return ((left | right) * 255).astype(np.uint8)


def write_tree(root: Path, per_class: int = PER_CLASS, size: int = SIZE, seed: int = 0) -> Path:
    """root/<class>/<class>_<i>.png: a class-per-folder dataset."""
    rng = np.random.default_rng(seed)
    for label in CLASSES:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(class_image(label, rng, size)).save(
                root / label / f"{label}_{i:03d}.png"
            )
    return root


def write_csv_dataset(root: Path, per_class: int = PER_CLASS, seed: int = 1) -> Path:
    """root/data.csv (relative paths, patient_id with several images each, mask_path)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = lung_mask()
    rows = []
    for label in CLASSES:
        for i in range(per_class):
            name = f"{label}_{i:03d}.png"
            Image.fromarray(class_image(label, rng)).save(root / "images" / name)
            Image.fromarray(mask).save(root / "masks" / name)
            patient = f"{label}-p{i // IMAGES_PER_PATIENT:02d}"
            rows.append((f"images/{name}", label, patient, f"masks/{name}"))
    csv = root / "data.csv"
    pd.DataFrame(rows, columns=["path", "label", "patient_id", "mask_path"]).to_csv(
        csv, index=False
    )
    return csv


class TinySpec(NamedTuple):
    """What the tiny fixture datasets hold."""

    classes: tuple[str, ...]
    per_class: int
    images_per_patient: int
    size: int


@pytest.fixture(scope="session")
def tiny() -> TinySpec:
    """The shape of `folder_tree` and `csv_dataset`, for tests that count rows."""
    return TinySpec(CLASSES, PER_CLASS, IMAGES_PER_PATIENT, SIZE)


@pytest.fixture(scope="session")
def folder_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 16 PNGs of 32x32 in class folders (read-only: copy before changing it)."""
    return write_tree(tmp_path_factory.mktemp("tree") / "tiny")


@pytest.fixture(scope="session")
def csv_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CSV variant: data.csv with path,label,patient_id,mask_path (2 images per patient)."""
    return write_csv_dataset(tmp_path_factory.mktemp("csvdata"))


@pytest.fixture(scope="session")
def easy_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A larger class-folder set (3 x 40) for learning tests."""
    return write_tree(tmp_path_factory.mktemp("easy") / "easy", per_class=40, seed=7)


@pytest.fixture(scope="session")
def easy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CSV variant with 3 x 40 images (20 patients a class) for slow learning tests."""
    return write_csv_dataset(tmp_path_factory.mktemp("easycsv"), per_class=40, seed=3)


@contextmanager
def isolated_cwd(path: Path) -> Iterator[Path]:
    """Work inside `path` with no MLFLOW_TRACKING_URI, so runs land in path/mlruns."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("CXRLAB_DEBUG", raising=False)  # errors must surface as CLI messages
        yield path


@pytest.fixture(scope="session")
def isolate() -> Callable[[Path], Any]:
    """isolated_cwd for fixtures wider than one test (module-scoped training runs)."""
    return isolated_cwd


@pytest.fixture
def in_tmp_cwd(tmp_path: Path) -> Iterator[Path]:
    """Run the test inside tmp_path so MLflow's default sqlite:///mlruns/mlflow.db lands there."""
    with isolated_cwd(tmp_path):
        yield tmp_path


@pytest.fixture(scope="session")
def make_config() -> Callable[..., Config]:
    """A factory: dotted overrides -> the validated Config that CXRClassifier and CXRDataModule take."""

    def make(overrides: dict[str, Any] | None = None) -> Config:
        # The fixture trees' images are 32 px, below the data.min_image_size default.
        base = {"data.image_size": 64, "data.min_image_size": 16, "model.weights": "none"}
        return load_config(overrides=base | (overrides or {}))

    return make


def _split_accuracy(model: torch.nn.Module, splits: pd.DataFrame, split: str, size: int) -> float:
    """Accuracy of a loaded classifier on one split of a run's splits.csv, from the files."""
    rows = splits[splits["split"] == split]
    prep = eval_transform(size)
    x = torch.stack([prep(torch.from_numpy(read_image(p))[None]) for p in rows["path"]])
    y = torch.tensor([model.classes.index(label) for label in rows["label"]])
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="session")
def split_accuracy() -> Callable[[torch.nn.Module, pd.DataFrame, str, int], float]:
    """Recompute a logged accuracy from a checkpoint and splits.csv (metrics must match it)."""
    return _split_accuracy
