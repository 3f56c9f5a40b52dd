"""Decoding image files to float [H, W] arrays in [0, 1], and the errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from samples import write_dicom

from datamodules.images import read_image, read_mask


def ramp(h: int = 24, w: int = 32, top: int = 255) -> np.ndarray:
    """A smooth 2-D gradient reaching `top` (smooth so JPEG keeps it well)."""
    yy, xx = np.mgrid[:h, :w]
    return np.round((xx / (w - 1) * 0.7 + yy / (h - 1) * 0.3) * top).astype(np.int64)


def test_png_8bit(tmp_path: Path) -> None:
    arr = ramp().astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (24, 32)
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-7)


def test_png_16bit_scaled_by_65535(tmp_path: Path) -> None:
    arr = ramp(top=65535).astype(np.uint16)
    arr[0, 0], arr[-1, -1] = 0, 65535
    Image.fromarray(arr).save(tmp_path / "a16.png")
    with Image.open(tmp_path / "a16.png") as img:
        assert img.mode.startswith("I")  # really stored as 16-bit
    out = read_image(tmp_path / "a16.png")
    np.testing.assert_allclose(out, arr / 65535.0, atol=1e-6)
    assert out[0, 0] == 0.0 and out[-1, -1] == 1.0


def test_rgb_to_gray(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:2] = (100, 100, 100)  # gray stays gray
    rgb[2:] = (255, 0, 0)  # pure red: ITU-R 601 luma weight 0.299
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.shape == (4, 6)
    np.testing.assert_allclose(out[:2], 100 / 255, atol=1e-7)
    np.testing.assert_allclose(out[2:], 0.299, atol=1 / 255)


def test_jpeg(tmp_path: Path) -> None:
    arr = ramp().astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (24, 32)
    assert np.abs(out - arr / 255.0).mean() < 2 / 255  # lossy, but close


@pytest.mark.parametrize("suffix", [".dcm", ".DICOM"])
def test_dicom_monochrome2_min_max(tmp_path: Path, suffix: str) -> None:
    pixels = ramp(top=4000) + 50
    out = read_image(write_dicom(tmp_path / f"a{suffix}", pixels, "MONOCHROME2", slope=2.0, intercept=-100, bits_stored=12))
    expected = (pixels - pixels.min()) / (pixels.max() - pixels.min())
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_dicom_monochrome1_inverted(tmp_path: Path) -> None:
    pixels = ramp(top=4000) + 50
    out = read_image(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1", intercept=-100, bits_stored=12))
    expected = 1 - (pixels - pixels.min()) / (pixels.max() - pixels.min())
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[0, 0] == 1.0  # the smallest stored value is the brightest in MONOCHROME1


def test_truncated_png_names_file(tmp_path: Path) -> None:
    Image.fromarray(ramp(64, 64).astype(np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.png: unreadable image"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("name", ["junk.png", "junk.jpg", "junk.dcm"])
def test_garbage_bytes_name_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x00\x01garbage" * 20)
    with pytest.raises(ValueError, match=f"{name}: "):
        read_image(tmp_path / name)


def test_missing_and_degenerate(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.png: image file not found"):
        read_image(tmp_path / "nothere.png")
    Image.fromarray(np.zeros((1, 10), dtype=np.uint8)).save(tmp_path / "line.png")
    with pytest.raises(ValueError, match=r"line.png: expected a 2-D image, got shape \(1, 10\)"):
        read_image(tmp_path / "line.png")


def test_read_mask(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:5, 3:7] = 255
    mask[0, 0] = 100  # below half: outside
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask > 128)
