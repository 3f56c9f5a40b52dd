"""Decoding CXR image files (8/16-bit PNG, JPEG, TIFF, DICOM) to float arrays in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DICOM_SUFFIXES = {".dcm", ".dicom"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"} | DICOM_SUFFIXES


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise ValueError(f"{path}: DICOM needs pydicom: pip install 'cxrlab[dicom]'") from None
    ds = pydicom.dcmread(str(path))
    arr = ds.pixel_array.astype(np.float32)
    if arr.ndim == 3:  # multi-frame or colour: a CXR has one gray frame, take the first
        arr = arr[0] if arr.shape[-1] not in (3, 4) else arr[..., :3].mean(-1)
    arr = arr * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    # MONOCHROME1 stores bone dark; flip so every image shows bone bright, like a PNG export.
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        arr = 1.0 - arr
    return arr


def _read_pil(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit PNGs decode to uint16 or int32; the full 16-bit range maps to [0, 1].
            return np.asarray(img, dtype=np.float32) / 65535.0
        if img.mode == "F":
            arr = np.asarray(img, dtype=np.float32)
            lo, hi = float(arr.min()), float(arr.max())
            return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        if img.mode != "L":
            img = img.convert("L")
        return np.asarray(img, dtype=np.float32) / 255.0


def read_image(path: str | Path) -> np.ndarray:
    """A grayscale float32 [H, W] array in [0, 1]; raises ValueError naming a bad file."""
    path = Path(path)
    try:
        if path.suffix.lower() in DICOM_SUFFIXES:
            arr = _read_dicom(path)
        else:
            arr = _read_pil(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except ValueError:
        raise
    except Exception as e:  # PIL/pydicom raise many types for corrupt or truncated files
        raise ValueError(f"{path}: unreadable image ({type(e).__name__}: {e}); replace or remove it") from None
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


def read_mask(path: str | Path) -> np.ndarray:
    """A binary mask PNG as a bool [H, W] array (nonzero = inside)."""
    return read_image(path) > 0.5
