"""Decoding CXR image files (8/16-bit PNG, JPEG, TIFF, DICOM) to float arrays in [0, 1]."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from cxrlab.config import DataConfig, first_line

DICOM_SUFFIXES = {".dcm", ".dicom"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"} | DICOM_SUFFIXES
# Raw detector images (more than 8 bits: an 8-bit file was windowed for display already): their
# extremes are collimator edges, markers and open-field exposure, so without a useful VOI window
# the percentiles of the pixels set black and white, not min/max.
PROJECTION_MODALITIES = {"CR", "DX", "RG"}
# A VOI window over at least this share of the detector's value range only says "show everything".
FULL_RANGE_SHARE = 0.9

_DEFAULTS = DataConfig()
# Our own header check below rejects oversized images with a counted skip; PIL's warning for the
# same images is noise. PIL's hard error is kept (and reworded) by tying its limit to ours.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than data.max_pixels (never decoded)."""


@dataclass(frozen=True)
class Decoding:
    """How files become intensities: the DICOM window policy and the pixel limit."""

    dicom_window: str = _DEFAULTS.dicom_window
    dicom_percentiles: tuple[float, float] = tuple(_DEFAULTS.dicom_percentiles)  # type: ignore[assignment]
    max_pixels: int = _DEFAULTS.max_pixels

    @classmethod
    def from_data(cls, data: DataConfig) -> Decoding:
        """The decoding settings of a data config section."""
        low, high = data.dicom_percentiles
        return cls(data.dicom_window, (low, high), data.max_pixels)

    def check_size(self, path: Path, shape: tuple[int, ...]) -> None:
        """Refuse, before any pixel is decoded, an image larger than max_pixels."""
        pixels = int(np.prod(shape))
        if pixels > self.max_pixels:
            raise self.too_large(path, f"{' x '.join(map(str, shape))} = {pixels} pixels")

    def too_large(self, path: Path, size: str) -> ImageTooLarge:
        """The one-line refusal of an image of `size` (as text)."""
        return ImageTooLarge(
            f"{path}: {size} exceeds data.max_pixels={self.max_pixels} (a decompression bomb?); "
            "skipped unread, raise data.max_pixels to read it"
        )


DEFAULT_DECODING = Decoding()  # the data config's defaults, for callers without a config


def percentile_window(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the `low` and `high` percentiles of `arr` to 0 and 1, clipping outside."""
    lo, hi = np.percentile(arr, [low, high])
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float64)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)


def _stored_range(ds: Any) -> np.ndarray:
    """The smallest and largest storable pixel value, e.g. [0, 4095] for 12 unsigned bits."""
    bits = int(ds.BitsStored)
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    return np.array([0, 2**bits - 1])


def _window_spans_detector(ds: Any) -> bool:
    """True when the first VOI window covers (nearly) the detector's whole modality-LUT range."""
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_modality_lut

    center, width = ds.WindowCenter, ds.WindowWidth
    center = float(center[0] if isinstance(center, MultiValue) else center)
    width = float(width[0] if isinstance(width, MultiValue) else width)
    lo, hi = np.sort(apply_modality_lut(_stored_range(ds), ds).astype(np.float64))
    covered = min(hi, center + width / 2) - max(lo, center - width / 2)
    return hi <= lo or covered >= FULL_RANGE_SHARE * (hi - lo)


def _dicom_policy(ds: Any, requested: str) -> str:
    """Resolve `auto` to voi or percentile for one file."""
    if requested != "auto":
        return requested
    if ds.get("VOILUTSequence"):
        return "voi"  # a LUT is a deliberate display curve
    if _has_window(ds) and not _window_spans_detector(ds):
        return "voi"
    raw = str(ds.get("Modality", "")).upper() in PROJECTION_MODALITIES and int(ds.BitsStored) > 8
    return "percentile" if raw else "voi"


def _has_window(ds: Any) -> bool:
    return "WindowCenter" in ds and "WindowWidth" in ds


def _apply_voi(arr: np.ndarray, ds: Any) -> np.ndarray:
    """The file's VOI LUT or window (pydicom), scaled by that function's output range to [0, 1]."""
    from pydicom.pixels import apply_voi_lut

    if ds.get("VOILUTSequence"):
        lut = ds.VOILUTSequence[0].LUTDescriptor
        first, n = int(lut[1]), int(lut[0]) or 2**16
        arr = np.rint(arr).astype(np.int64)  # LUTs index integers
        ends = apply_voi_lut(np.arange(first, first + n), ds)  # every LUT output value
    elif _has_window(ds):
        ends = apply_voi_lut(np.array([-(2.0**52), 2.0**52]), ds)  # saturates at both ends
    else:  # no VOI in the file: the image's own range
        return percentile_window(arr, 0.0, 100.0)
    lo, hi = float(np.min(ends)), float(np.max(ends))
    out = apply_voi_lut(arr, ds).astype(np.float64)
    return (out - lo) / (hi - lo) if hi > lo else np.zeros(arr.shape)


def _read_dicom(path: Path, decoding: Decoding, source: BinaryIO | None = None) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut
    except ImportError:
        raise ValueError(f"{path}: DICOM needs pydicom: pip install 'cxrlab[dicom]'") from None
    # Elements over 64 KB (the pixel data) stay on disk until read, so the size check below
    # runs on the header alone.
    ds = pydicom.dcmread(source if source is not None else str(path), defer_size="64 KB")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    decoding.check_size(path, (int(ds.Rows), int(ds.Columns)) + ((frames,) if frames > 1 else ()))
    arr = ds.pixel_array
    if frames > 1:
        arr = arr[0]  # a CXR has one frame; later ones are duplicates or derived views
    if int(ds.get("SamplesPerPixel", 1)) > 1:  # a colour capture (a photographed film): luma
        return arr[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114] / (2 ** int(ds.BitsStored) - 1)
    arr = apply_modality_lut(arr, ds).astype(np.float64)
    if _dicom_policy(ds, decoding.dicom_window) == "percentile":
        arr = percentile_window(arr, *decoding.dicom_percentiles)
    else:
        arr = _apply_voi(arr, ds)
    # MONOCHROME1 stores bone dark; flip so every image shows bone bright, like a PNG export.
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        arr = 1.0 - arr
    return arr


def _read_pil(path: Path, decoding: Decoding, source: BinaryIO | None = None) -> np.ndarray:
    # PIL checks its own limit inside open(); the same number keeps its refusal and ours in step.
    Image.MAX_IMAGE_PIXELS = decoding.max_pixels
    try:
        img = Image.open(source if source is not None else path)  # lazy: reads the header only
    except Image.DecompressionBombError as e:  # over twice the limit: PIL refuses in open()
        pixels = re.search(r"(\d+) pixels", str(e))
        raise decoding.too_large(path, f"{pixels[1]} pixels" if pixels else "its size") from None
    with img:
        decoding.check_size(path, (img.height, img.width))
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit PNGs decode to uint16 or int32; the full 16-bit range maps to [0, 1].
            return np.asarray(img, dtype=np.float32) / 65535.0
        if img.mode == "F":
            arr = np.asarray(img, dtype=np.float32)
            lo, hi = float(arr.min()), float(arr.max())
            return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        if img.mode != "L":
            img = img.convert("L")  # RGB/palette/1-bit films: ITU-R 601 luma
        return np.asarray(img, dtype=np.float32) / 255.0


def is_dicom(head: bytes) -> bool:
    """Whether a file's first bytes are a DICOM part-10 file (the 'DICM' marker after 128 bytes)."""
    return head[128:132] == b"DICM"


def read_image(path: str | Path, decoding: Decoding = DEFAULT_DECODING) -> np.ndarray:
    """A grayscale float32 [H, W] array in [0, 1]; raises ValueError naming a bad file."""
    path = Path(path)
    try:
        if path.suffix.lower() in DICOM_SUFFIXES:
            return _checked(path, _read_dicom(path, decoding))
        return _checked(path, _read_pil(path, decoding))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except Exception as e:  # PIL/pydicom raise many types for corrupt or truncated files
        raise _unreadable(path, e) from None


def read_image_bytes(data: bytes, name: str, decoding: Decoding = DEFAULT_DECODING) -> np.ndarray:
    """The same array from an encoded file's bytes (PNG, JPEG, TIFF, DICOM: told by their
    content, not a name); `name` is what errors call it."""
    path = Path(name)
    try:
        if is_dicom(data[:132]):
            return _checked(path, _read_dicom(path, decoding, io.BytesIO(data)))
        return _checked(path, _read_pil(path, decoding, io.BytesIO(data)))
    except Exception as e:  # noqa: BLE001  (as read_image: any decoder error is one line)
        raise _unreadable(path, e) from None


def _unreadable(path: Path, e: Exception) -> Exception:
    """The one-line error of a file the decoders refused (ours pass through unchanged)."""
    if isinstance(e, ValueError) and str(e).startswith(f"{path}: "):
        return e  # ours, already naming the file
    return ValueError(f"{path}: unreadable image ({type(e).__name__}: {first_line(e)}); replace or remove it")


def _checked(path: Path, arr: np.ndarray) -> np.ndarray:
    """A decoded array as float32 in [0, 1], refused unless it is one 2-D image."""
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False)


def read_mask(path: str | Path, decoding: Decoding = DEFAULT_DECODING) -> np.ndarray:
    """A binary mask PNG as a bool [H, W] array (nonzero = inside)."""
    return read_image(path, decoding) > 0.5
