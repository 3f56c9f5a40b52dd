"""Eigen-heatmaps: class averages, per-class uncentred PCA of raw heatmaps, and their comparison."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cxrlab.callbacks.explanations.display import upsample
from cxrlab.config.errors import DetailWarning

HeatmapSet = tuple[np.ndarray, np.ndarray, list[str]]  # raw maps [N, C, h, w], labels [N], class names
MIN_IMAGES = 2  # a PCA of one map is the map itself: nothing to learn about variation


@dataclass
class PCAResult:
    """Uncentred PCA of one class' heatmaps, truncated to the kept components."""

    components: np.ndarray  # [k, H, W], unit norm, sign-aligned with the average map
    singular_values: np.ndarray  # [k]
    explained_variance_ratio: np.ndarray  # [k], share of the uncentred second moment
    n_components: int


@dataclass
class EigenResult:
    """Everything the eigen-heatmap report needs for one heatmap set."""

    class_names: list[str]
    averages: np.ndarray  # [C_img, C_map, H, W]; NaN rows for image classes without images
    counts: np.ndarray  # [C] images per true class
    pcas: list[PCAResult | None]  # None for classes skipped (fewer than MIN_IMAGES images)
    variance_table: pd.DataFrame  # class, component, explained_variance_ratio, cumulative
    pc1_var: np.ndarray  # [C] explained variance ratio of PC1, NaN when skipped
    avg_pc1_corr: pd.DataFrame  # [i, j] = Pearson(PC1 of class i, diagonal average of class j)
    argmax_map: np.ndarray  # [H, W] class index of the strongest normalised average, -1 if none
    box_values: dict[str, np.ndarray]  # raw pixel values of each diagonal average map


def _as_float_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Return x as a floating numpy array (float32 stays float32, integers become float64)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.astype(np.result_type(arr.dtype, np.float32), copy=False)


def _as_labels(labels: np.ndarray | torch.Tensor, n: int, n_classes: int) -> np.ndarray:
    """Validate true labels: n integers in 0..n_classes-1."""
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers (one per heatmap), got {lab.dtype} {lab.shape}")
    if n and (lab.min() < 0 or lab.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}; got {lab.min()}..{lab.max()}")
    return lab


def pearson_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlations between rows of a [p, ...] and rows of b [q, ...] as [p, q]."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    # NaN rows (missing classes) and constant rows (zero norm) both come out as NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
        return (a @ b.T) / np.where(norms > 0, norms, np.nan)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps of equal size (NaN if either is constant or has NaN)."""
    return float(pearson_matrix(a[None], b[None])[0, 0])


def average_heatmaps(
    heatmaps: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, n_classes: int
) -> np.ndarray:
    """Average heatmaps per (image class, heatmap class): [C_img, C_map, H, W], NaN if no images."""
    maps = _as_float_array(heatmaps)
    if maps.ndim != 4 or maps.shape[1] != n_classes:
        raise ValueError(f"heatmaps must be [N, {n_classes}, H, W], got shape {maps.shape}")
    lab = _as_labels(labels, len(maps), n_classes)
    counts = np.bincount(lab, minlength=n_classes)
    # one GEMM with a [C, N] averaging matrix reads the (large) heatmap stack once
    weights = np.zeros((n_classes, len(maps)), dtype=maps.dtype)
    weights[lab, np.arange(len(maps))] = 1.0 / counts[lab]
    averages = (weights @ maps.reshape(len(maps), -1)).reshape(n_classes, *maps.shape[1:])
    averages[counts == 0] = np.nan
    return averages


def class_pca(
    maps: np.ndarray | torch.Tensor, var_threshold: float = 0.95, max_components: int | None = None
) -> PCAResult:
    """Uncentred PCA of maps [M, H, W] keeping the fewest components reaching var_threshold."""
    x = _as_float_array(maps)
    if x.ndim != 3 or len(x) < MIN_IMAGES:
        raise ValueError(f"maps must be [M, H, W] with M >= {MIN_IMAGES}, got shape {x.shape}")
    if not 0.0 < var_threshold <= 1.0:
        raise ValueError(f"var_threshold must be in (0, 1], got {var_threshold}")
    if max_components is not None and max_components < 1:
        raise ValueError(f"max_components must be >= 1 or None, got {max_components}")
    m, size = len(x), x.shape[1:]
    flat = x.reshape(m, -1)
    # eigen-decompose the smaller Gram side: M x M (the usual case) or D x D for tiny maps
    by_rows = m <= flat.shape[1]
    gram = (flat @ flat.T if by_rows else flat.T @ flat).astype(np.float64)
    if not np.isfinite(gram).all():
        raise ValueError("maps contain NaN or inf values; clean the heatmaps before the PCA")
    eigvals, eigvecs = np.linalg.eigh(gram)
    eigvals, eigvecs = np.clip(eigvals[::-1], 0.0, None), eigvecs[:, ::-1]
    total = np.trace(gram)
    if total <= 0:
        raise ValueError("maps are all zero; there is no variance to decompose")
    ratio = eigvals / total
    # components below round-off of the Gram product are noise, never kept
    rank = max(1, int((eigvals > eigvals[0] * len(gram) * np.finfo(x.dtype).eps).sum()))
    k = min(int(np.searchsorted(np.cumsum(ratio), var_threshold)) + 1, rank)
    k = k if max_components is None else min(k, max_components)
    sv = np.sqrt(eigvals[:k])
    if by_rows:
        comps = (eigvecs[:, :k].T.astype(x.dtype) @ flat) / sv[:, None].astype(x.dtype)
    else:
        comps = eigvecs[:, :k].T.astype(x.dtype)
    # Pearson(pc, avg) has the sign of pc . (avg - mean(avg)): one GEMV instead of k correlations
    average = flat.mean(axis=0)
    comps *= np.where(comps @ (average - average.mean()) < 0, -1, 1).astype(x.dtype)[:, None]
    return PCAResult(comps.reshape(k, *size), sv, ratio[:k], k)


def argmax_class_map(diagonal: np.ndarray) -> np.ndarray:
    """Per pixel, the class whose min-max normalised map [C, H, W] is largest (-1 where all NaN)."""
    d = _as_float_array(diagonal)
    if d.ndim != 3:
        raise ValueError(f"diagonal must be [C, H, W], got shape {d.shape}")
    missing = np.isnan(d)
    # inf fill instead of nanmin/nanmax: all-NaN maps (absent classes) must not warn
    lo = np.where(missing, np.inf, d).min(axis=(1, 2), keepdims=True)
    span = np.where(missing, -np.inf, d).max(axis=(1, 2), keepdims=True) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(span > 0, (d - lo) / span, 0.0)
    norm = np.where(missing, -np.inf, norm)
    out = norm.argmax(axis=0)
    out[np.isneginf(norm.max(axis=0))] = -1
    return out


def _variance_rows(name: str, pca: PCAResult | None) -> list[dict]:
    """Variance-table rows for one class; one NaN row when the class was skipped."""
    if pca is None:
        return [{"class": name, "component": pd.NA, "explained_variance_ratio": np.nan,
                 "cumulative": np.nan}]
    cum = np.cumsum(pca.explained_variance_ratio)
    return [
        {"class": name, "component": i + 1, "explained_variance_ratio": float(r),
         "cumulative": float(c)}
        for i, (r, c) in enumerate(zip(pca.explained_variance_ratio, cum, strict=True))
    ]


def eigen_heatmaps(
    heatmaps: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    var_threshold: float = 0.95,
) -> EigenResult:
    """Averages, per-class PCA (map c over images of class c) and summary tables of raw heatmaps."""
    names = list(class_names)
    maps = _as_float_array(heatmaps)
    averages = average_heatmaps(maps, labels, len(names))
    lab = _as_labels(labels, len(maps), len(names))
    counts = np.bincount(lab, minlength=len(names))
    pcas: list[PCAResult | None] = []
    for c, name in enumerate(names):
        if counts[c] < MIN_IMAGES:
            warnings.warn(
                f"class {name!r} has {counts[c]} image(s), fewer than {MIN_IMAGES}: "
                "eigen-heatmap skipped (NaN in tables)", DetailWarning, stacklevel=2,
            )
            pcas.append(None)
        elif not np.any(maps[lab == c, c]):
            # Zero maps are a real outcome (e.g. an untrained model), not an error in the data.
            warnings.warn(
                f"class {name!r}: every heatmap is zero, nothing to decompose: eigen-heatmap "
                "skipped (NaN in tables)", DetailWarning, stacklevel=2,
            )
            pcas.append(None)
        else:
            pcas.append(class_pca(maps[lab == c, c], var_threshold))
    diagonal = averages[np.arange(len(names)), np.arange(len(names))]
    nan_map = np.full(maps.shape[2:], np.nan, dtype=maps.dtype)
    pc1 = np.stack([nan_map if p is None else p.components[0] for p in pcas])
    return EigenResult(
        class_names=names,
        averages=averages,
        counts=counts,
        pcas=pcas,
        variance_table=pd.DataFrame(
            [row for name, p in zip(names, pcas, strict=True) for row in _variance_rows(name, p)]
        ).astype({"component": "Int64"}),
        pc1_var=np.array([np.nan if p is None else p.explained_variance_ratio[0] for p in pcas]),
        avg_pc1_corr=pd.DataFrame(pearson_matrix(pc1, diagonal), index=names, columns=names),
        argmax_map=argmax_class_map(diagonal),
        box_values={name: diagonal[c].ravel() for c, name in enumerate(names) if counts[c]},
    )


def reconstruct(heatmap: np.ndarray | torch.Tensor, pca: PCAResult, k: int) -> np.ndarray:
    """Project heatmap [H, W] onto the first k principal components of pca."""
    x = _as_float_array(heatmap)
    if x.shape != pca.components.shape[1:]:
        raise ValueError(f"heatmap must be {pca.components.shape[1:]}, got shape {x.shape}")
    if not 1 <= k <= pca.n_components:
        raise ValueError(f"k must be in 1..{pca.n_components} (kept components), got {k}")
    basis = pca.components[:k].reshape(k, -1)
    return ((basis @ x.ravel()) @ basis).reshape(x.shape)


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize maps [..., h, w] to size (a no-op when sizes already agree)."""
    if maps.shape[-2:] == tuple(size):
        return maps
    t = torch.from_numpy(np.ascontiguousarray(maps)).reshape(-1, 1, *maps.shape[-2:])
    out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return out.reshape(*maps.shape[:-2], *size).numpy()


def compare(a: EigenResult, b: EigenResult) -> pd.DataFrame:
    """Correlate two heatmap sets: every average pair and, on the diagonal, the PC1s."""
    if a.class_names != b.class_names:
        raise ValueError(f"both results need the same classes, got {a.class_names} and {b.class_names}")
    n, size = len(a.class_names), a.averages.shape[-2:]
    b_avg = _resize(b.averages, size)
    avg_corr = np.diag(pearson_matrix(a.averages.reshape(n * n, -1), b_avg.reshape(n * n, -1)))
    rows = []
    for i, img_cls in enumerate(a.class_names):
        for j, map_cls in enumerate(a.class_names):
            pca_a, pca_b = a.pcas[i], b.pcas[i]
            pc1 = np.nan
            if i == j and pca_a is not None and pca_b is not None:
                # a PC's sign is a convention: compare shapes, not orientation
                pc1 = abs(pearson(pca_a.components[0], _resize(pca_b.components[0], size)))
            rows.append({"image_class": img_cls, "heatmap_class": map_cls,
                         "average_corr": float(avg_corr[i * n + j]), "pc1_corr": pc1})
    return pd.DataFrame(rows)


def robustness(a: HeatmapSet, b: HeatmapSet, display_size: int = 224) -> pd.DataFrame:
    """Correlations of class averages and PC1s between two heatmap sets (the robustness study)."""
    (ha, la, ca), (hb, lb, cb) = a, b
    if ca != cb:
        raise ValueError(f"heatmap sets have different classes: {ca} vs {cb}")
    ea = eigen_heatmaps(upsample(torch.from_numpy(ha), display_size).numpy(), la, ca)
    eb = eigen_heatmaps(upsample(torch.from_numpy(hb), display_size).numpy(), lb, cb)
    return compare(ea, eb)
