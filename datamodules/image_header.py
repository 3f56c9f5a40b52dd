"""What an image file's header says (size, mode, bit depth) without decoding its pixels."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cxrlab.datamodules.images import DICOM_SUFFIXES, is_dicom

# PIL modes -> bits per sample ("I;16" PNGs are 16-bit grayscale, "1" is bilevel).
_BITS = {"1": 1, "L": 8, "P": 8, "LA": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8,
         "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


@dataclass(frozen=True)
class Header:
    """Width and height in pixels, colour mode (PIL name or DICOM photometric), bits per sample."""

    width: int
    height: int
    mode: str
    bits: int


def read_header(path: str | Path) -> Header:
    """The header of a PNG/JPEG/TIFF/BMP (PIL, lazy) or DICOM (pydicom, no pixel data)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        return Header(int(ds.Columns), int(ds.Rows), str(ds.PhotometricInterpretation),
                      int(getattr(ds, "BitsStored", ds.BitsAllocated)))
    with warnings.catch_warnings():
        # Only the header is read; the pixel limit (data.max_pixels) is the decoder's to enforce.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            return Header(img.width, img.height, img.mode, _BITS.get(img.mode, 8))


def small_images(paths: list[str], min_size: int) -> list[tuple[str, str]]:
    """(path, error) of images whose shorter side is below `min_size` px (unreadable headers are
    left to the decode check, which names their error)."""
    out = []
    for p in paths:
        try:
            h = read_header(p)
        except Exception:  # noqa: BLE001  (any header problem is reported by the decode check)
            continue
        if min(h.width, h.height) < min_size:
            out.append((p, f"{p}: {h.width}x{h.height} px is below data.min_image_size={min_size}"))
    return out


# What a frontal chest film's DICOM header says; a value outside these is refused by predict.
FILM_MODALITIES = {"CR", "DX", "DR"}
CHEST_PARTS = {"CHEST", "THORAX", "LUNG", "LUNGS", "PORT CHEST"}
FRONTAL_VIEWS = {"PA", "AP", "AP SUPINE", "PA ERECT", "AP ERECT"}


def film_problem(source: str | Path | bytes, name: str | None = None) -> str | None:
    """Why a DICOM is not a frontal chest radiograph (its Modality, BodyPartExamined or
    ViewPosition tag), in one line naming the tag and its value; None when it is, or when the
    file is no DICOM (other formats carry no such header)."""
    if isinstance(source, bytes):
        if not is_dicom(source[:132]):
            return None
        name, stream = name or "image", io.BytesIO(source)
    else:
        path = Path(source)
        if path.suffix.lower() not in DICOM_SUFFIXES:
            return None
        name, stream = name or str(path), str(path)
    import pydicom

    try:
        ds = pydicom.dcmread(stream, stop_before_pixels=True)
    except Exception:  # noqa: BLE001  (an unreadable header is the decoder's to report)
        return None
    modality = str(ds.get("Modality", "") or "").strip().upper()
    part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if modality and modality not in FILM_MODALITIES:
        return f"{name}: DICOM Modality is {modality}, not a radiograph ({', '.join(sorted(FILM_MODALITIES))})"
    if part and part not in CHEST_PARTS:
        return f"{name}: DICOM BodyPartExamined is {part}, not a chest"
    if view and view not in FRONTAL_VIEWS:
        return f"{name}: DICOM ViewPosition is {view}, not a frontal (PA or AP) film"
    return None
