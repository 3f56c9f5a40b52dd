"""Batched inference of a CXRClassifier over sample-table rows."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrlab.config import DataConfig
from cxrlab.datamodules.datamodule import CXRDataset
from cxrlab.datamodules.images import Decoding
from cxrlab.datamodules.transforms import eval_transform
from cxrlab.lightning_modules.classifier import CXRClassifier

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str = "auto") -> torch.device:
    """The torch device for `--device auto|cpu|cuda` (auto: CUDA when available)."""
    if name not in DEVICES:
        raise ValueError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def predict_table(
    model: CXRClassifier,
    rows: pd.DataFrame,
    data: DataConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Softmax probabilities [N, K] (float32) of the images in `rows` (columns path, label), read
    as `data` says (crop margin, DICOM decoding, batch size, loader workers)."""
    if rows.empty:
        return np.zeros((0, len(model.classes)), dtype=np.float32)
    transform = eval_transform(model.input_size, data.crop_margin)
    dataset = CXRDataset(rows, model.classes, transform, Decoding.from_data(data))
    loader = DataLoader(dataset, batch_size=data.batch_size, shuffle=False, num_workers=data.num_workers)
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for x, _ in tqdm(
            loader, desc="predict", unit="batch", disable=not progress, file=sys.stderr
        ):
            # float32 throughout: the same checkpoint must give the same numbers in any process.
            out.append(model(x.to(device)).float().softmax(dim=1).cpu())
    return torch.cat(out).numpy()
