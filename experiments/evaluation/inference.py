"""Batched inference of a CXRClassifier over sample-table rows."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrlab.callbacks.trust.model_trust import Trust, judge
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


def _batches(
    model: CXRClassifier, rows: pd.DataFrame, data: DataConfig, device: torch.device | str, progress: bool
) -> Iterator[torch.Tensor]:
    """The images of `rows` in batches on `device`, read as `data` says (crop margin, DICOM
    decoding, batch size, loader workers)."""
    transform = eval_transform(model.input_size, data.crop_margin)
    dataset = CXRDataset(rows, model.classes, transform, Decoding.from_data(data))
    loader = DataLoader(dataset, batch_size=data.batch_size, shuffle=False, num_workers=data.num_workers)
    for x, _ in tqdm(loader, desc="predict", unit="batch", disable=not progress, file=sys.stderr):
        yield x.to(device)


def predict_table(
    model: CXRClassifier,
    rows: pd.DataFrame,
    data: DataConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Probabilities [N, K] (float32: softmax, or a sigmoid per finding) of the images in `rows` (columns path, label)."""
    if rows.empty:
        return np.zeros((0, len(model.classes)), dtype=np.float32)
    model = model.to(device).eval()
    with torch.inference_mode():
        # float32 throughout: the same checkpoint must give the same numbers in any process.
        out = [model.probabilities(model(x)).cpu() for x in _batches(model, rows, data, device, progress)]
    return torch.cat(out).numpy()


def judge_table(
    model: CXRClassifier,
    rows: pd.DataFrame,
    data: DataConfig,
    trust: Trust,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Probabilities [N, K] of `rows` as predict_table gives them, and the trust model's verdicts
    per row (calibrated probabilities, in_distribution, ood_score, template_corr (NaN for a
    multi-label model: it has no templates), explanation_typical, shortcut_flag), in one pass."""
    model = model.to(device).eval()
    probs, frames = [], []
    for x in _batches(model, rows, data, device, progress):
        v = judge(model, trust, x, model.config.explain)
        probs.append(model.probabilities(v.logits).cpu())
        frame = pd.DataFrame(v.probs.cpu().numpy(), columns=[f"calibrated_p_{c}" for c in model.classes])
        frame["in_distribution"] = v.in_distribution
        frame["ood_score"] = v.ood_score.cpu().numpy()
        frame["template_corr"] = np.nan if v.template_corr is None else v.template_corr.cpu().numpy()
        frame["explanation_typical"] = v.typical
        frame["shortcut_flag"] = v.shortcut_flag
        frames.append(frame)
    if not frames:
        return np.zeros((0, len(model.classes)), dtype=np.float32), pd.DataFrame()
    return torch.cat(probs).numpy(), pd.concat(frames, ignore_index=True)


def predict_and_judge(
    model: CXRClassifier,
    rows: pd.DataFrame,
    data: DataConfig,
    trust: Trust | None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, pd.DataFrame | None]:
    """predict_table's probabilities of `rows` and, where the model has a trust model, its verdicts
    per row from the same pass (judge_table); None without one."""
    if trust is None:
        return predict_table(model, rows, data, device, progress), None
    return judge_table(model, rows, data, trust, device, progress)
