"""Small in-memory image sets (probe sets, explain sets) with their masks, preprocessed like eval."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cxrlab.datamodules.images import DEFAULT_DECODING, Decoding, read_image, read_mask
from cxrlab.datamodules.sources.findings import BOXES, POSITIVE, finding_column
from cxrlab.datamodules.transforms import crop_margin, eval_transform


@dataclass
class ImageSet:
    """Images [N, 1, S, S] in [0, 1], class indices [N], and optional masks [N, S, S] (bool)."""

    table: pd.DataFrame
    images: torch.Tensor
    labels: torch.Tensor
    lung_masks: torch.Tensor | None
    lesion_masks: torch.Tensor | None


def stratified_sample(table: pd.DataFrame, per_class: int | None, seed: int = 0) -> pd.DataFrame:
    """Up to `per_class` rows of every label (all rows when None), seeded, in label order."""
    if per_class is None:
        return table
    parts = [
        g.sample(n=min(per_class, len(g)), random_state=seed) for _, g in table.groupby("label", sort=True)
    ]
    return pd.concat(parts) if parts else table.iloc[:0]


def finding_pairs(table: pd.DataFrame, findings: list[str], per_label: int | None, seed: int = 0) -> pd.DataFrame:
    """Multi-label rows as (image, positive finding) pairs: up to `per_label` images that have each
    finding, seeded, with `label` set to that finding (an image with two findings comes twice)."""
    parts = []
    for name in findings:
        has = table[table[finding_column(name)] == POSITIVE]
        if per_label is not None:
            has = has.sample(n=min(per_label, len(has)), random_state=seed)
        parts.append(has.assign(findings=has["label"], label=name))
    return pd.concat(parts) if parts else table.iloc[:0]


def _fit_mask(mask: np.ndarray, size: int, margin: float) -> torch.Tensor:
    """A mask at its own pixel size -> [size, size] bool, cropped like the image (nearest keeps it binary)."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = F.interpolate(crop_margin(m, margin), size=(size, size), mode="nearest")
    return m[0, 0] > 0.5


def _load_mask(path: object, size: int, margin: float, decoding: Decoding) -> torch.Tensor:
    if not isinstance(path, str) or not path:
        return torch.zeros(size, size, dtype=torch.bool)
    return _fit_mask(read_mask(path, decoding), size, margin)


def box_mask(boxes: object, shape: tuple[int, int], label: str | None = None) -> np.ndarray:
    """lesion_boxes JSON ([[x, y, w, h(, finding)], ...] in the image's pixels) as a mask of the
    image's shape; with `label`, only the boxes of the findings it names ("A" or "A|B") and unnamed ones."""
    named = set(label.split("|")) if label else None
    mask = np.zeros(shape, dtype=bool)
    if isinstance(boxes, str) and boxes:
        for box in json.loads(boxes):
            if named is None or len(box) < 5 or box[4] in named:
                x, y, w, h = box[:4]
                mask[max(0, round(y)) : round(y + h), max(0, round(x)) : round(x + w)] = True
    return mask


def load_image_set(
    table: pd.DataFrame, classes: list[str], size: int, margin: float = 0.0, decoding: Decoding = DEFAULT_DECODING
) -> ImageSet:
    """Decode a (small) table into tensors, with lung/lesion masks when the table has them."""
    transform = eval_transform(size, margin)
    raws = [read_image(p, decoding) for p in table["path"]]
    images = torch.stack([transform(torch.from_numpy(r)[None]) for r in raws])
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index.get(label, -1) for label in table["label"]], dtype=torch.long)

    def masks(column: str) -> torch.Tensor | None:
        if column not in table.columns or table[column].isna().all():
            return None
        return torch.stack([_load_mask(p, size, margin, decoding) for p in table[column]])

    lesions = masks("lesion_path")
    if lesions is None and BOXES in table.columns and table[BOXES].map(lambda v: isinstance(v, str) and v not in ("", "[]")).any():
        # NIH and RSNA mark findings with boxes: drawn at each image's own size, then cropped like it;
        # an (image, finding) pair's label is that finding, so its mask holds that finding's boxes.
        lesions = torch.stack([_fit_mask(box_mask(b, r.shape, str(label)), size, margin)
                               for b, r, label in zip(table[BOXES], raws, table["label"], strict=True)])
    return ImageSet(table.reset_index(drop=True), images, labels, masks("mask_path"), lesions)
