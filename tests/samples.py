"""Small hand-made inputs shared by several test files: predictions with known metrics, DICOMs,
the PNG signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"  # the first 8 bytes of every PNG file


def write_bomb_png(path: Path, side: int = 13000) -> Path:
    """A black 1-bit side x side PNG, written chunk by chunk (PIL would hold side^2 bytes):
    13000^2 is 169 MP, about 20 KB on disk, and 1.7 GB once decoded to float."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then the packed bits
    pack = zlib.compressobj(9)
    body = b"".join(pack.compress(row * 1000) for _ in range(side // 1000)) + pack.compress(row * (side % 1000))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    path.write_bytes(PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", body + pack.flush()) + chunk(b"IEND", b""))
    return path
NAMES = ["normal", "covid", "pneumonia"]
# Predictions: [0, 0, 1, 1, 1, 2, 2, 2, 2, 0]  -> cm rows [2 1 0], [0 2 1], [1 0 3].
Y_SMALL = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
P_SMALL = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.5, 0.2],
        [0.1, 0.8, 0.1],
        [0.2, 0.6, 0.2],
        [0.1, 0.4, 0.5],
        [0.2, 0.1, 0.7],
        [0.1, 0.2, 0.7],
        [0.3, 0.3, 0.4],
        [0.5, 0.1, 0.4],
    ]
)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    bits_stored: int = 16,
    modality: str = "DX",
    window: tuple[float, float] | None = None,
    transfer_syntax: str | None = None,
    **attributes: object,
) -> Path:
    """A minimal grayscale DICOM file built with pydicom ([frames,] rows, columns `pixels`).

    `window` is (center, width); `attributes` are set as they are (LUT sequences, NumberOfFrames);
    `transfer_syntax` compresses the pixels (JPEG 2000, JPEG-LS, RLE) with pydicom's encoders.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for name, value in attributes.items():
        setattr(ds, name, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)
    return path
